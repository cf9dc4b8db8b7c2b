"""The one owner of the services' lifecycle: choose() picks a backend, acquire() starts or reuses
its services under a lease; the pytest plugin and `python -m testbed` both go through here."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from testbed.config import Settings
from testbed.errors import UsageError
from testbed.report import command, say
from testbed.services.backend import ServiceBackend
from testbed.services.endpoints import Endpoints

if TYPE_CHECKING:
    from testbed.services.ownership import Lease


def resolve_backend_name(
    settings: Settings, *, recorded_first: bool = False, starting: bool = False
) -> str:
    """The one backend selection: explicit, else this checkout's recorded instance (whatever
    URLs the environment holds for it, e.g. after `eval "$(make env)"`), else external if URLs
    are set, docker if an engine answers and can run the compose file (Engine >= 25, Compose
    v2, the images), else native. recorded_first (`down`): this checkout's recorded instance
    wins even over an explicit E2E_BACKEND. starting: the services are about to start, so
    docker may pull images, and a fallback to native says why in one line."""
    from testbed.services import docker
    from testbed.services.ownership import read_record, state_dir_of

    record = read_record(state_dir_of(settings))
    recorded = record.get("backend")
    if recorded_first and recorded in ("native", "docker"):
        return str(recorded)
    if settings.backend != "auto":
        return settings.backend
    if recorded in ("native", "docker"):
        # Only its own URLs (what `python -m testbed env` prints) mean "this instance"; any
        # other URL, even at the same port (another database), is the user's explicit
        # external target.
        urls = ((settings.database_url, "database_url"), (settings.redis_url, "redis_url"))
        if all(url is None or url == record.get(key) for url, key in urls):
            return str(recorded)
    if settings.database_url or settings.redis_url:
        return "external"
    if not docker.engine_answers():
        return "native"
    why = docker.unavailable(settings, fetch=starting)
    if why is None:
        return "docker"
    if starting:
        say(f"auto: using the native backend: {why}")
    return "native"


def choose(
    settings: Settings, *, recorded_first: bool = False, starting: bool = False
) -> ServiceBackend:
    """The backend for these settings (see resolve_backend_name)."""
    name = resolve_backend_name(settings, recorded_first=recorded_first, starting=starting)
    if name == "external":
        from testbed.services.external import ExternalBackend

        return ExternalBackend(settings)
    if name == "docker":
        from testbed.services.docker import DockerBackend

        return DockerBackend(settings)
    if name == "native":
        from testbed.services.native import NativeBackend

        return NativeBackend(settings)
    raise UsageError(f"unknown backend {name!r}; valid: auto, native, docker, external")


@dataclass
class Hold:
    """A lease this process holds on the services: release() ends it (and stops them when it
    was the last one)."""

    backend: ServiceBackend
    lease: Lease
    endpoints: Endpoints
    started: bool

    def release(self, *, keep: bool = False) -> bool:
        """End the lease; True if that stopped the services."""
        return self.backend.release(self.lease.id, keep=keep)


def acquire(settings: Settings, *, kind: str = "run", holder_pid: int | None = None) -> Hold:
    """The one entry to the services (plugin and CLI): choose the backend, then start or reuse
    them under a lease. kind "run": held while holder_pid (default: this process) lives;
    "user" (`python -m testbed up`): kept until `python -m testbed down`."""
    from testbed.services.ownership import USER, holder_identity, new_lease

    if kind == USER and holder_pid is not None:
        raise UsageError("an owner pid only makes sense for a run's services, not the user's")
    holder = holder_identity(holder_pid) if kind != USER else None
    lease = new_lease(kind, holder)
    backend = choose(settings, starting=True)
    _refuse_other_backend(settings, backend.name)
    try:
        endpoints, started = backend.ensure(lease)
        return Hold(backend, lease, endpoints, started)
    except KeyboardInterrupt:
        # Ctrl-C after the lease was recorded (the start had finished: on the way out of the
        # lock, or back here): nobody would end it, and the services would run on for `reap`.
        if kind != USER and _holds(settings, lease):
            with contextlib.suppress(Exception):  # the interrupt is the one to report
                backend.release(lease.id)
        raise


def _holds(settings: Settings, lease: Lease) -> bool:
    """The instance's record names this lease (it was registered)."""
    from testbed.services.ownership import read_record, state_dir_of

    return any(x.id == lease.id for x in read_record(state_dir_of(settings)).leases())


def _refuse_other_backend(settings: Settings, name: str) -> None:
    """This checkout's services run on one backend at a time: one in use is never replaced
    (its record would be lost, and with it who uses what)."""
    from testbed.errors import InUse
    from testbed.services.ownership import read_record, state_dir_of

    if name == "external":  # services testbed does not manage: no record of ours applies
        return
    record = read_record(state_dir_of(settings))
    recorded = record.get("backend")
    live = [x for x in record.leases() if x.alive()]
    if recorded in ("native", "docker") and recorded != name and live:
        raise InUse(
            f"this checkout's {recorded} services are in use by {live[0].describe()}; "
            f"use E2E_BACKEND={recorded}, or {command('down')} first (and wait for that run)"
        )


def ensure_up(
    settings: Settings, *, owner: str = "run", owner_pid: int | None = None
) -> tuple[Endpoints, bool]:
    """acquire() for callers that only need the endpoints: the lease ends with the holder
    process (a run) or at `python -m testbed down` (owner "user")."""
    hold = acquire(settings, kind=owner, holder_pid=owner_pid)
    return hold.endpoints, hold.started
