"""What every API servicer shares: the engine (once started) and the configuration."""

from __future__ import annotations

from typing import Final

from edgeproto import settings_pb2

from edge_cloud.errors import Unavailable
from edge_cloud.objects import registry
from edge_cloud.objects.registry import SETTINGS_KEY
from services.controller._engine import Engine
from services.controller._settings import default_settings
from services.controller._sync import Caches
from services.controller.config import ControllerConfig

__all__ = ["SETTINGS", "Runtime"]

SETTINGS: Final = registry.by_class(settings_pb2.Settings)


class Runtime:
    """Late-bound state of the daemon: servicers are registered before etcd is reached.

    Args:
        config: The daemon's configuration.
    """

    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self._engine: Engine | None = None

    def attach(self, engine: Engine) -> None:
        """Make the engine available to the servicers (end of start-up)."""
        self._engine = engine

    @property
    def engine(self) -> Engine:
        """The engine.

        Raises:
            Unavailable: The Controller has not finished starting.
        """
        if self._engine is None:
            raise Unavailable("the Controller is still starting; retry shortly")
        return self._engine

    @property
    def caches(self) -> Caches:
        """The object caches."""
        return self.engine.caches

    def settings(self) -> settings_pb2.Settings:
        """The cached Settings, or the defaults when none are stored (the original's Singular)."""
        current = self.engine.caches.get(SETTINGS, SETTINGS_KEY)
        return current if current is not None else default_settings()
