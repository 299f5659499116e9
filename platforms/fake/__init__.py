"""The fake platforms: an in-memory infrastructure simulation (see README.md)."""

from platforms.fake.platform import (
    FakeBareMetalPlatform,
    FakePlatform,
    FakePublicCloudPlatform,
    FakeSingleClusterPlatform,
    FakeVMPoolPlatform,
)

__all__ = [
    "FakeBareMetalPlatform",
    "FakePlatform",
    "FakePublicCloudPlatform",
    "FakeSingleClusterPlatform",
    "FakeVMPoolPlatform",
]
