"""External backend: services someone else runs (E2E_DATABASE_URL / E2E_REDIS_URL), guarded."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from testbed import guard
from testbed.config import Settings
from testbed.errors import UsageError
from testbed.services import health
from testbed.services.backend import ServiceStatus
from testbed.services.endpoints import Endpoints

if TYPE_CHECKING:
    from testbed.services.ownership import Lease


class ExternalBackend:
    """Uses given URLs; never starts, stops or writes anything itself."""

    name = "external"

    def __init__(self, settings: Settings) -> None:
        missing = [
            env
            for env, value in (
                ("E2E_DATABASE_URL", settings.database_url),
                ("E2E_REDIS_URL", settings.redis_url),
            )
            if not value
        ]
        if missing:
            raise UsageError(
                f"the external backend needs both URLs; {' and '.join(missing)} not set. "
                "Set both, or unset both to let testbed start its own services (E2E_BACKEND=auto)"
            )
        self.settings = settings
        self.database_url = str(settings.database_url)
        self.redis_url = str(settings.redis_url)
        # Refuse before anything connects, let alone writes.
        guard.check_postgres_url(self.database_url)
        guard.check_redis_url(self.redis_url)

    def _probe(self, timeout: float) -> Endpoints:
        pg_version = health.wait_postgres(self.database_url, timeout)
        redis_version = health.wait_redis(self.redis_url, timeout)
        return Endpoints(
            backend=self.name,
            database_url=self.database_url,
            redis_url=self.redis_url,
            pg_version=pg_version,
            redis_version=redis_version,
            redis_databases=health.redis_databases(self.redis_url),
        )

    def up(self) -> Endpoints:
        """Wait (bounded) until both external services answer."""
        return self._probe(self.settings.wait_timeout)

    def ensure(self, lease: Lease) -> tuple[Endpoints, bool]:
        """Like up(); never "started by us", so nobody takes these services down."""
        return self.up(), False

    def release(self, lease_id: str, *, keep: bool = False) -> bool:
        """Nothing to release: testbed does not manage these services."""
        return False

    def down(self) -> str:
        """Nothing to stop: these services are not ours."""
        return "not managed by testbed (external URLs): nothing to stop"

    def logs(self) -> dict[str, Path]:
        """No server logs: the servers are someone else's."""
        return {}

    def running(self) -> Endpoints | None:
        """The endpoints if both answer right now, else None."""
        try:
            return self._probe(2.0)
        except Exception:  # unreachable is an answer here, not an error
            return None

    def status(self) -> ServiceStatus:
        """Report whether the external services answer."""
        eps = self.running()
        targets = f"{guard.redact(self.database_url)} or {guard.redact(self.redis_url)}"
        problems = () if eps else (f"{targets} does not answer",)
        return ServiceStatus(
            backend=self.name,
            endpoints=eps,
            details=("not managed by testbed: up/down do not start or stop it",),
            problems=problems,
        )

    def reap(self) -> list[str]:
        """Nothing to reap: processes behind the URLs are not ours."""
        return []
