"""Organisation and app names with a meaning of their own in the DME's rules.

The original hard-codes them (`cloudcommon.OperatorAzure`, `edgeproto.OrganizationPlatos`,
`cloudcommon.PlatosEnablingLayer`); FindCloudlet's carrier filter and padding and the
platform-only APIs compare against them, so they are wire-visible behaviour.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "PLATFORM_APP",
    "PLATFORM_ORG",
    "PUBLIC_CLOUDS",
    "is_platform_app",
]

PUBLIC_CLOUDS: Final = frozenset({"azure", "gcp", "aws"})
"""Operator organisations that are public clouds: always searched, padded for carriers."""

PLATFORM_ORG: Final = "platos"
"""The platform developer organisation (Samsung in MobiledgeX days)."""

PLATFORM_APP: Final = "PlatosEnablingLayer"
"""The one platform app: it may call PlatformFindCloudlet and GetFqdnList for other apps."""


def is_platform_app(organization: str, name: str) -> bool:
    """Whether an app is the platform's enabling layer rather than a developer's app.

    Args:
        organization: The app's organisation.
        name: The app's name (any version counts).

    Returns:
        True only for `platos` / `PlatosEnablingLayer`.
    """
    return organization == PLATFORM_ORG and name == PLATFORM_APP
