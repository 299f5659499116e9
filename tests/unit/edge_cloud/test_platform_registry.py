"""`edge_cloud.platform.registry`: plugins by entry point, checked, nothing swallowed.

Broken plugins are installed for real: a throwaway distribution (a `.dist-info` with an
`entry_points.txt`) on `sys.path`, found by `importlib.metadata` like any other.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from edge_cloud.errors import FailedPrecondition, NotFound
from edge_cloud.platform import Platform, registry
from edge_cloud.platform.registry import InvalidPlugin

FAKES = ["fake", "fakebaremetal", "fakepubliccloud", "fakesinglecluster", "fakevmpool"]


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A distribution `regtest` with deliberately broken platform entry points."""
    package = tmp_path / "regtest_plugins"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            from edge_cloud.platform import PlatformFeatures
            from platforms.fake import FakePlatform

            class NotAPlatform:
                features = PlatformFeatures(platform_type="regtest-notaplatform")

            class Mislabelled(FakePlatform):
                features = PlatformFeatures(platform_type="something-else")

            class Good(FakePlatform):
                features = PlatformFeatures(platform_type="regtest-good")
            """
        )
    )
    (package / "needs_sdk.py").write_text("import regtest_missing_cloud_sdk  # noqa\n")
    dist = tmp_path / "regtest_plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: regtest-plugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent(
            """
            [edge_cloud.platforms]
            regtest-good = regtest_plugins:Good
            regtest-notaplatform = regtest_plugins:NotAPlatform
            regtest-mislabelled = regtest_plugins:Mislabelled
            regtest-sdk = regtest_plugins.needs_sdk:Anything [regtestcloud]
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("regtest_plugins")]:
        del sys.modules[name]


def test_the_fakes_are_registered() -> None:
    assert set(FAKES) <= set(registry.available())
    for name in FAKES:
        cls = registry.load(name)
        assert issubclass(cls, Platform)
        assert registry.features(name).platform_type == name


def test_unknown_name_lists_the_available_ones() -> None:
    with pytest.raises(NotFound, match=r"openstack platform not found \(available: (\w+, )*fake, "):
        registry.load("openstack")


def test_load_imports_only_the_named_plugin(plugins: Path) -> None:
    assert registry.load("regtest-good").features.platform_type == "regtest-good"
    assert "regtest_plugins.needs_sdk" not in sys.modules


def test_a_missing_sdk_names_its_extra(plugins: Path) -> None:
    with pytest.raises(
        FailedPrecondition, match=r"pip install 'edge-cloud-platform\[regtestcloud\]'"
    ):
        registry.load("regtest-sdk")


def test_entry_point_must_be_a_platform(plugins: Path) -> None:
    with pytest.raises(InvalidPlugin, match="is not a Platform subclass"):
        registry.load("regtest-notaplatform")


def test_entry_point_must_declare_its_own_type(plugins: Path) -> None:
    with pytest.raises(InvalidPlugin, match="declares platform_type 'something-else'"):
        registry.load("regtest-mislabelled")
