"""The lease lifecycle, written once for every backend that starts services: take a lease on
healthy services of ours or start them, end it, stop them when the last lease goes, and judge
what dead runs left. A backend supplies only what differs, as a Runtime: how its services
start, stop and answer, and which of them are ours."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from testbed.config import Settings
from testbed.errors import InUse
from testbed.report import command
from testbed.services.endpoints import Endpoints
from testbed.services.ownership import (
    USER,
    Lease,
    Record,
    StateDir,
    Store,
    new_lease,
    new_record,
    release_lease,
    request_down,
)


class Runtime(Protocol):
    """What one backend does differently; everything about leases is decided here."""

    name: str
    settings: Settings
    state_dir: Path
    store: Store
    say: Callable[[str], None]

    @property
    def what(self) -> str:
        """The instance in a message: "this checkout's services (state dir …)"."""
        ...

    def adopt(self) -> None:
        """Under the lock, before anything is decided: take over what an older testbed left."""
        ...

    def present(self, record: Record) -> bool:
        """Servers of this instance exist (provably ours), answering or not."""
        ...

    def answering(self, record: Record) -> Endpoints | None:
        """Endpoints when they answer on the configured ports; InUse when they run on others."""
        ...

    def start(self, leases: list[Lease]) -> Endpoints:
        """Start the services for these leases. The record (with the leases) is written before
        anything runs, so a holder killed meanwhile leaves what reap needs to stop it."""
        ...

    def stop(self, record: Record, *, quiet: bool) -> list[str]:
        """Stop what record names (only what is provably ours) and remove the state dir if it is
        ours; return what was removed."""
        ...


def ensure(rt: Runtime, lease: Lease) -> tuple[Endpoints, bool]:
    """Reuse healthy services of ours or start them, and register the lease; the bool says
    whether this call started them (decided under the state dir's lock)."""
    project = rt.settings.project
    StateDir(rt.state_dir).check(project)
    with rt.store.locked():
        StateDir(rt.state_dir).check(project)
        rt.adopt()
        record = rt.store.read()
        record.reap_leases()
        other = record.get("backend")
        if other not in (None, rt.name) and record.processes():
            raise InUse(
                f"this checkout's {other} services are recorded in {rt.state_dir}; run "
                f"{command('down')} first, or use E2E_BACKEND={other}"
            )
        if rt.present(record):
            eps = rt.answering(record)
            if eps is not None:
                if other != rt.name:  # its record was lost, its passwords kept: ours again
                    record = _record_of(rt, eps)
                record.add_lease(lease)
                rt.store.write(record)
                return eps, False
            runs = [x for x in record.leases() if x.kind != USER]
            if runs:
                raise InUse(
                    f"{rt.what} do not answer, and {runs[0].describe()} still uses them; wait "
                    f"for it or stop it, then run {command('down')}"
                )
            rt.say(f"replacing {rt.what}: they do not answer")
        kept = [x for x in record.leases() if x.kind == USER]  # a crashed `python -m testbed up`
        rt.stop(record, quiet=True)
        try:
            return rt.start([*kept, lease]), True
        except BaseException:  # Ctrl-C included: leave nothing half-started
            with contextlib.suppress(Exception):  # the start's own error is the one to report
                rt.stop(rt.store.read(), quiet=True)
            raise


def up(rt: Runtime) -> Endpoints:
    """Start (or reuse) the services for the user, as `up` does: kept until `down`."""
    return ensure(rt, new_lease(USER, None))[0]


def _record_of(rt: Runtime, eps: Endpoints) -> Record:
    StateDir(rt.state_dir).prepare(project=rt.settings.project)
    return new_record(
        rt.name,
        rt.settings,
        rt.state_dir,
        database_url=eps.database_url,
        redis_url=eps.redis_url,
        pg_version=eps.pg_version,
        redis_version=eps.redis_version,
    )


def release(rt: Runtime, lease_id: str, *, keep: bool = False) -> bool:
    """End a lease (keep: hand the services to the user); stop them when it was the last one.
    True if they stopped."""
    with rt.store.locked():
        record = rt.store.read()
        if record.get("backend") != rt.name:
            return False
        if not release_lease(record, lease_id, keep=keep):
            rt.store.write(record)
            return False
        rt.stop(record, quiet=False)
        return True


def down(rt: Runtime) -> str:
    """`down`: end the user's lease; stop the services unless a live run uses them. One line
    saying what happened."""
    with rt.store.locked():
        rt.adopt()
        record = rt.store.read()
        state = StateDir(rt.state_dir)
        state.refuse_other_project(rt.settings.project)
        ours = record.get("backend") == rt.name
        if ours and (runs := request_down(record)):
            rt.store.write(record)
            who = ", ".join(x.describe() for x in runs)
            return f"left running: in use by {who}; they stop when it ends"
        if not ours and not state.is_ours() and not rt.present(record):
            if rt.state_dir.exists():
                return f"{rt.state_dir} was not made by testbed: left alone"
            return "no services of this checkout"
        rt.stop(record, quiet=False)
        return "stopped and their data removed"


@dataclass(frozen=True)
class Usage:
    """What `status` says about who uses an instance."""

    users: tuple[str, ...]  # "used by: …" lines
    orphaned: bool  # running, but no run or `up` uses it any more

    @property
    def problems(self) -> list[str]:
        """The advice for an orphaned instance (none otherwise)."""
        if not self.orphaned:
            return []
        return [f"no run or {command('up')} uses them any more: {command('reap')} removes them"]


def usage(record: Record, *, running: bool) -> Usage:
    """Who uses the instance (live leases only), and whether it runs for nobody."""
    live = [x for x in record.leases() if x.alive()]
    users = tuple(f"used by: {x.describe()}" for x in live) if live else ("used by: nobody",)
    return Usage(users, running and not live)


@dataclass(frozen=True)
class Leftovers:
    """What a record says dead runs left: their leases (now dropped), a deleted checkout."""

    dead: list[Lease]
    checkout_gone: Path | None

    def notes(self) -> list[str]:
        """One line per finding, for reap's report."""
        found = [f"lease of dead {x.describe()}" for x in self.dead]
        if self.checkout_gone is not None:
            found.append(f"services of deleted checkout {self.checkout_gone}")
        return found


def drop_dead(record: Record) -> Leftovers:
    """Drop the leases of dead runs, and the user's when its checkout is gone (nobody can run
    `down` there any more); the caller writes the record back."""
    dead = record.reap_leases()
    checkout = Path(str(record.get("checkout") or "/"))
    if checkout.exists():
        return Leftovers(dead, None)
    record.drop_user_lease()
    return Leftovers(dead, checkout)


def in_use(record: Record, *, whole: bool) -> bool:
    """Someone still uses the instance: a live run (even when a server died: the run fails on
    its own), or the user while the set is whole (a half set is of no use; `up` starts a whole
    one again)."""
    leases = record.leases()
    return any(x.kind != USER for x in leases) or (bool(leases) and whole)
