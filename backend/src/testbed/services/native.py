"""Native backend: PostgreSQL 16 and Valkey 8 as local processes (being filled in)."""

from __future__ import annotations

from testbed.config import Settings
from testbed.errors import ServicesUnavailable
from testbed.services import Endpoints, ServiceStatus


class NativeBackend:
    """Placeholder until the native lifecycle lands."""

    name = "native"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def up(self) -> Endpoints:
        """Not yet implemented."""
        raise ServicesUnavailable("native backend not implemented yet; use E2E_BACKEND=external")

    def down(self) -> None:
        """Not yet implemented."""

    def running(self) -> Endpoints | None:
        """Not yet implemented."""
        return None

    def status(self) -> ServiceStatus:
        """Not yet implemented."""
        return ServiceStatus(backend=self.name, endpoints=None)

    def reap(self) -> list[str]:
        """Not yet implemented."""
        return []
