"""What every API servicer shares: the engine (once started) and the configuration."""

from __future__ import annotations

from typing import Final

from edgeproto import settings_pb2

from edge_cloud.errors import FailedPrecondition, Unavailable
from edge_cloud.objects import registry
from edge_cloud.objects.registry import SETTINGS_KEY
from edge_cloud.secrets import SecretsBackend
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
        self._secrets: SecretsBackend | None = None

    def attach(self, engine: Engine) -> None:
        """Make the engine available to the servicers (end of start-up)."""
        self._engine = engine

    def attach_secrets(self, backend: SecretsBackend | None) -> None:
        """Make the secrets backend available (start-up; None: the daemon has none)."""
        self._secrets = backend

    @property
    def optional_secrets(self) -> SecretsBackend | None:
        """The secrets backend, None when the Controller runs without one."""
        return self._secrets

    def secrets(self, what: str) -> SecretsBackend:
        """The secrets backend, for a request that must keep `what` out of etcd.

        Raises:
            FailedPrecondition: The Controller runs without one; the message says how to
                give it one.
        """
        if self._secrets is None:
            raise FailedPrecondition(
                f"{what} are kept in the secrets backend (Vault, or the local sealed store), "
                "and this Controller has none: start it with VAULT_ADDR (and VAULT_TOKEN or an "
                "AppRole), or with --secrets-key-file for the local backend"
            )
        return self._secrets

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
