"""The interface every service backend implements (native, docker, external), and its status."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from testbed.guard import redact
from testbed.services.endpoints import Endpoints

if TYPE_CHECKING:
    from testbed.services.ownership import Lease


@dataclass(frozen=True)
class ServiceStatus:
    """What `status` reports: backend, endpoints when healthy, processes/containers, problems."""

    backend: str
    endpoints: Endpoints | None
    processes: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    details: tuple[str, ...] = field(default=())
    orphaned: bool = False  # healthy, but the run that started them is gone (reap removes them)

    @property
    def healthy(self) -> bool:
        """True when both services answered a real query."""
        return self.endpoints is not None

    def render(self) -> str:
        """Human-readable multi-line report."""
        lines = [f"backend:    {self.backend}"]
        eps = self.endpoints
        if eps is not None:
            lines += [
                f"postgresql: PostgreSQL {eps.pg_version} at {redact(eps.database_url)}",
                f"valkey:     Valkey {eps.redis_version} at {redact(eps.redis_url)} "
                f"({eps.redis_databases} databases)",
            ]
        lines += [f"process:    {p}" for p in self.processes]
        lines += [f"            {d}" for d in self.details]
        lines += [f"problem:    {p}" for p in self.problems]
        lines.append("health:     " + ("healthy" if self.healthy else "not running / unhealthy"))
        return "\n".join(lines)


class ServiceBackend(Protocol):
    """One way to get PostgreSQL 16 + Valkey 8: native processes, compose, or given URLs.

    Every backend that starts something records who started it and which runs use it
    (testbed.services.ownership), so it stops only what it started, when nobody uses it.
    """

    name: str

    def ensure(self, lease: Lease) -> tuple[Endpoints, bool]:
        """Reuse healthy services of ours or start them, registering the lease; the bool is
        True when this call started them. Decided under the backend's lock."""
        ...

    def release(self, lease_id: str, *, keep: bool = False) -> bool:
        """End a lease (keep: hand the services to the user); stop them when it was the last
        one. True if they stopped."""
        ...

    def down(self) -> str:
        """`python -m testbed down`: end the user's lease and stop the services unless a live
        run uses them; one line saying what happened."""
        ...

    def running(self) -> Endpoints | None:
        """Healthy services of ours, or None."""
        ...

    def status(self) -> ServiceStatus:
        """Report backend, versions, ports, processes, leases and health."""
        ...

    def reap(self) -> list[str]:
        """Remove what dead runs left behind; return what was removed."""
        ...

    def logs(self) -> dict[str, Path]:
        """Server logs by service name (their tails are shown, and they are kept, when a
        service dies); empty when the backend has none."""
        ...
