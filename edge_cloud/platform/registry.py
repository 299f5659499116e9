"""The platform registry: plugins by name, through the `edge_cloud.platforms` entry points.

`load("openstack")` imports only that plugin (a vSphere CCRM never imports boto3). The
entry-point name is the platform type; the class must subclass `Platform` and declare that
same `features.platform_type`. Nothing is swallowed: an unknown name lists the available
ones, a plugin whose SDK is missing names the extra to install.
"""

from __future__ import annotations

import importlib.metadata
from typing import Final

from edge_cloud.errors import EdgeError, FailedPrecondition, NotFound
from edge_cloud.platform._base import Platform
from edge_cloud.platform._features import PlatformFeatures

__all__ = ["GROUP", "InvalidPlugin", "available", "features", "load"]

GROUP: Final = "edge_cloud.platforms"


class InvalidPlugin(EdgeError):
    """An entry point names something that is not a matching `Platform` class: our bug."""


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=GROUP)}


def available() -> list[str]:
    """Names of the installed platforms, sorted; nothing is imported."""
    return sorted(_entry_points())


def load(name: str) -> type[Platform]:
    """Import one platform's class by its type name.

    Args:
        name: The platform type (`fake`, `openstack`, ...).

    Returns:
        The plugin class, checked.

    Raises:
        NotFound: No such platform is installed (`<name> platform not found`, with the list
            of installed ones).
        FailedPrecondition: The plugin needs an SDK that is not installed; the message names
            the extra that brings it.
        InvalidPlugin: The entry point is not a `Platform` subclass declaring `name`.
    """
    eps = _entry_points()
    ep = eps.get(name)
    if ep is None:
        known = ", ".join(sorted(eps)) or "none installed"
        raise NotFound(f"{name} platform not found (available: {known})")
    try:
        loaded = ep.load()
    except ModuleNotFoundError as err:
        extras = ", ".join(ep.extras) if ep.extras else name
        raise FailedPrecondition(
            f"platform {name} needs the module {err.name}: install the extra with "
            f"pip install 'edge-cloud-platform[{extras}]'"
        ) from err
    if not (isinstance(loaded, type) and issubclass(loaded, Platform)):
        raise InvalidPlugin(f"entry point {name} = {ep.value} is not a Platform subclass")
    declared = getattr(loaded, "features", None)
    if not isinstance(declared, PlatformFeatures):
        raise InvalidPlugin(f"platform class {ep.value} declares no PlatformFeatures")
    if declared.platform_type != name:
        raise InvalidPlugin(
            f"platform class {ep.value} declares platform_type {declared.platform_type!r}, "
            f"but is registered as {name!r}"
        )
    return loaded


def features(name: str) -> PlatformFeatures:
    """The features of one platform, read from its class without building it.

    Raises:
        NotFound: See `load`.
    """
    return load(name).features
