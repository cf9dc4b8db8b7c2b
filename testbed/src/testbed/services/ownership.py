"""Who started what, and who uses it: process identity, marked state dirs, the instance record
and its leases. Backend-neutral: native records server processes, docker its compose project
and container ids; both keep the record (and its leases) in their marked state dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from testbed.config import PROJECT_RE, default_state_root, state_filesystem
from testbed.errors import InUse, ServicesUnavailable, UnsafePath, UsageError
from testbed.report import command
from testbed.services import private
from testbed.services.portlock import is_current, wait_unless_frozen

if TYPE_CHECKING:
    from testbed.config import Settings

MARKER = ".testbed-state"  # in every state dir testbed made (or adopted while empty)
RECORD = "state.json"
_CMDLINE_TRIES = 40
USER = "user"  # the lease of `python -m testbed up`: kept until `python -m testbed down`
RUN = "run"
LOCKS = "locks"  # in the invoking user's base: one lock file per state dir


# -- process identity ------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcessIdentity:
    """A process as recorded when it started: pid, start time and command line(s).

    A pid alone proves nothing (pids are reused, pid files can be stale or forged); a process
    is the recorded one only when all three match. `titles` holds the command lines the
    process may show (an older testbed let Valkey rewrite its own, and recorded both); testbed
    now starts its servers so that they keep the one they were started with.
    """

    pid: int
    started: float
    titles: tuple[str, ...]

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity | None:
        """The identity of the live process pid, or None when it is gone or a zombie."""
        # Right around exec the kernel shows an empty command line for a moment: ask again.
        for _ in range(_CMDLINE_TRIES):
            try:
                proc = psutil.Process(pid)
                with proc.oneshot():
                    if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                        return None
                    found = cls(pid, round(proc.create_time(), 2), (" ".join(proc.cmdline()),))
            except (psutil.Error, OSError):
                return None
            if found.titles[0]:
                return found
            time.sleep(0.005)
        return found

    def alive(self) -> bool:
        """True when pid is a live process with the recorded start time and command line."""
        now = ProcessIdentity.of(self.pid)
        if now is None or now.started != self.started:
            return False
        # An empty command line: the process is exiting or not readable to us; start time
        # and pid matched, which a reused pid cannot fake within one boot.
        return now.titles[0] in self.titles or now.titles[0] == ""

    def stopped(self) -> bool:
        """True when the process is frozen (SIGSTOP)."""
        try:
            return psutil.Process(self.pid).status() == psutil.STATUS_STOPPED
        except psutil.Error:
            return False

    def to_json(self) -> dict[str, Any]:
        """Plain data for the record."""
        return {"pid": self.pid, "started": self.started, "titles": list(self.titles)}

    @classmethod
    def from_json(cls, data: object) -> ProcessIdentity | None:
        """Parse a recorded identity; None for anything malformed (never trusted)."""
        if not isinstance(data, dict):
            return None
        pid, started, titles = data.get("pid"), data.get("started"), data.get("titles")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            return None
        if not isinstance(started, int | float) or not isinstance(titles, list) or not titles:
            return None
        return cls(pid, float(started), tuple(str(t) for t in titles))


def holder_identity(pid: int | None = None) -> ProcessIdentity:
    """The identity of a lease holder: pid (default: this process), which must be alive."""
    pid = os.getpid() if pid is None else pid
    found = ProcessIdentity.of(pid) if pid > 0 else None
    if found is None:
        raise UsageError(f"owner pid {pid} is not a running process; pass a live pid (e.g. $$)")
    return found


# -- marked state dirs -------------------------------------------------------------------------
def state_dir_of(settings: Settings) -> Path:
    """The settings' state dir; for the default one not made yet, the old default of an older
    testbed (/dev/shm/<project>, beside the base) while that is ours and marked for this project:
    its services stay found until their `down`."""
    path = settings.state_dir
    if path != default_state_root() / settings.project or path.exists():
        return path
    old = StateDir(state_filesystem() / settings.project)
    return old.path if old.project() == settings.project and old.is_ours() else path


def _valid_project(value: object) -> bool:
    return isinstance(value, str) and PROJECT_RE.fullmatch(value) is not None


@dataclass(frozen=True)
class StateDir:
    """A directory testbed made (or adopted while empty) and marked; it deletes only in these.

    Ours means: a private directory of the invoking user (see private.py) holding a marker
    file of that user that parses. Anything else, however it looks, is never trusted.
    """

    path: Path

    @property
    def marker(self) -> Path:
        """The marker file that makes the directory ours."""
        return self.path / MARKER

    def trusted(self) -> bool:
        """True when nobody but us can write the directory or swap one on its way."""
        return private.path_problem(self.path) is None and private.problem(self.path) is None

    def is_ours(self) -> bool:
        """True when the directory is private to us and carries our (valid) marker."""
        return self.trusted() and self.project() is not None

    def project(self) -> str | None:
        """The project the marker names, or None (no marker, not ours, malformed)."""
        data = private.read_json(self.marker)
        project = data.get("project") if data else None
        return project if _valid_project(project) else None

    def _created(self) -> list[Path]:
        # Only the state dir itself and its own parents: a marker must not send us elsewhere.
        data = private.read_json(self.marker) or {}
        raw = data.get("created")
        found = [Path(p) for p in raw if isinstance(p, str)] if isinstance(raw, list) else []
        return [p for p in found if p.is_absolute() and private.inside(self.path, p)]

    def prepare(self, *, project: str, traverse_gid: int | None = None) -> None:
        """Create (0700) and mark the directory, or check that it is ours and this project's;
        refuse anything else. traverse_gid: the server account's group may enter it (0710).
        Never changes the mode of a directory it did not create."""
        path = self.path
        fix = "choose a directory only you can write with E2E_STATE_DIR (or unset it)"
        try:
            if (why := private.path_problem(path)) is not None:
                raise UnsafePath(f"refusing the state dir {path}: {why}; {fix}")
            if self.is_ours():
                self.refuse_other_project(project)
                if traverse_gid is not None:
                    private.grant_traverse(path, traverse_gid)
                return
            if path.is_symlink() or path.is_dir():
                if (why := private.problem(path)) is not None:
                    raise UnsafePath(f"refusing the state dir {path}: {why}; {fix}")
                legacy = self._legacy(project)  # an older testbed made it: ours to remove
                if any(path.iterdir()) and not legacy:
                    raise UsageError(
                        f"state dir {path} is not empty and was not made by testbed; "
                        "choose a new or empty directory with E2E_STATE_DIR"
                    )
                created: list[str] = [str(path)] if legacy else []
            elif path.exists() or path.is_symlink():
                raise UsageError(f"state dir {path} exists and is not a directory; choose another")
            else:
                if private.inside(path, private.base_dir()):
                    private.base()  # made and verified as the base, never as a parent of ours
                created = self._make(path, traverse_gid)
            if traverse_gid is not None:
                private.grant_traverse(path, traverse_gid)
            payload = json.dumps({"project": project, "created": created}) + "\n"
            private.write_atomic(self.marker, payload)
        except OSError as exc:
            raise ServicesUnavailable(
                f"cannot prepare the state dir {path}: {exc.strerror or exc}; "
                "choose a writable E2E_STATE_DIR"
            ) from None

    def check(self, project: str) -> None:
        """Before any use: refuse a state dir another user could write or swap, or one that is
        marked for another project (one line each, saying what to do)."""
        path = self.path
        fix = "choose a directory only you can write with E2E_STATE_DIR (or unset it)"
        why = private.path_problem(path)
        if why is None and (path.exists() or path.is_symlink()):
            why = private.problem(path)
        if why is not None:
            raise UnsafePath(f"refusing the state dir {path}: {why}; {fix}")
        self.refuse_other_project(project)

    def refuse_other_project(self, project: str) -> None:
        """Raise InUse when the directory is marked for another project (one state dir, one
        project: the other's services, data and leases are never ours to reuse or stop)."""
        other = self.project()
        if other is None or other == project:
            return
        record = read_record(self.path)
        checkout = record.get("checkout")
        where = f"in {checkout}" if isinstance(checkout, str) and checkout else "in that project"
        raise InUse(
            f"state dir {self.path} belongs to project {other}, not {project}: run "
            f"`python -m testbed down` {where} first, or give this project its own "
            "E2E_STATE_DIR (or unset it)"
        )

    def _legacy(self, project: str) -> bool:
        # A state dir an older testbed made for this project has its record but no marker.
        record = private.read_json(self.path / RECORD)
        return record is not None and record.get("project") == project

    @staticmethod
    def _make(path: Path, traverse_gid: int | None) -> list[str]:
        missing = []
        for parent in (path, *path.parents):
            if parent.exists() or parent.is_symlink():
                break
            missing.append(parent)
        for directory in reversed(missing):
            os.mkdir(directory, 0o700)  # fails rather than adopt one someone made meanwhile
            if traverse_gid is not None:
                private.grant_traverse(directory, traverse_gid)
        return [str(d) for d in missing]

    def remove(self) -> list[str]:
        """Delete the directory's contents, and the directory and parents we created; only
        when it is ours. Returns what was removed."""
        if not self.is_ours():
            return []
        created = self._created()
        removed = []
        for entry in sorted(self.path.iterdir()):
            if entry.name == MARKER:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(str(entry))
        self.marker.unlink(missing_ok=True)
        for directory in sorted(created, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):  # innermost first, only while empty
                directory.rmdir()
        return removed


# -- the instance record and its leases ---------------------------------------------------------
@dataclass(frozen=True)
class Lease:
    """One user of an instance: a run (its process identity) or the user
    (`python -m testbed up`)."""

    id: str
    kind: str  # RUN or USER
    holder: ProcessIdentity | None
    since: float

    def alive(self) -> bool:
        """The user's lease lives until `python -m testbed down`; a run's while its process does."""
        return self.kind == USER or (self.holder is not None and self.holder.alive())

    def describe(self) -> str:
        """'run pid 1234 (since 10:01:02)' or 'the user (make up)'."""
        if self.kind == USER:
            return f"the user ({command('up')}; kept until {command('down')})"
        pid = self.holder.pid if self.holder else "?"
        return f"run pid {pid} (since {time.strftime('%H:%M:%S', time.localtime(self.since))})"

    def to_json(self) -> dict[str, Any]:
        """Plain data for the record."""
        data = asdict(self)
        data["holder"] = self.holder.to_json() if self.holder else None
        return data

    @classmethod
    def from_json(cls, data: object) -> Lease | None:
        """Parse a recorded lease (None when malformed)."""
        if not isinstance(data, dict) or data.get("kind") not in (RUN, USER):
            return None
        holder = ProcessIdentity.from_json(data.get("holder"))
        lease_id, since = data.get("id"), data.get("since") or 0
        if data["kind"] == RUN and holder is None:
            return None
        if not isinstance(lease_id, str) or not isinstance(since, int | float):
            return None
        return cls(lease_id, str(data["kind"]), holder, float(since))


def new_lease(kind: str, holder: ProcessIdentity | None) -> Lease:
    """A fresh lease of kind RUN (holder required) or USER."""
    if kind not in (RUN, USER):
        raise UsageError(f"unknown lease kind {kind!r}; valid: {RUN}, {USER}")
    if kind == RUN and holder is None:
        raise UsageError("a run's lease needs the run's process")
    return Lease(uuid.uuid4().hex[:12], kind, holder if kind == RUN else None, time.time())


class Record(dict[str, Any]):
    """The instance record (state.json): what was started, by which backend, and its leases."""

    def leases(self) -> list[Lease]:
        """Every parseable lease, dead or alive."""
        found = (Lease.from_json(x) for x in self.get("leases", []))
        return [lease for lease in found if lease is not None]

    def set_leases(self, leases: list[Lease]) -> None:
        """Replace the leases."""
        self["leases"] = [lease.to_json() for lease in leases]

    def reap_leases(self) -> list[Lease]:
        """Drop leases whose holder is gone (by identity); return the dropped ones."""
        leases = self.leases()
        dead = [lease for lease in leases if not lease.alive()]
        self.set_leases([lease for lease in leases if lease.alive()])
        return dead

    def add_lease(self, lease: Lease) -> Lease:
        """Add a lease; the user's is added at most once (returns the existing one)."""
        leases = self.leases()
        if lease.kind == USER:
            for existing in leases:
                if existing.kind == USER:
                    return existing
        self.set_leases([*leases, lease])
        return lease

    def drop_lease(self, lease_id: str) -> bool:
        """Remove one lease; True if it was there."""
        leases = self.leases()
        kept = [lease for lease in leases if lease.id != lease_id]
        self.set_leases(kept)
        return len(kept) != len(leases)

    def drop_user_lease(self) -> bool:
        """Remove the user's lease (`python -m testbed down`); True if there was one."""
        leases = self.leases()
        kept = [lease for lease in leases if lease.kind != USER]
        self.set_leases(kept)
        return len(kept) != len(leases)

    def processes(self) -> dict[str, ProcessIdentity]:
        """The recorded server processes by service name."""
        raw = self.get("processes", {})
        found = (
            {k: ProcessIdentity.from_json(v) for k, v in raw.items()}
            if isinstance(raw, dict)
            else {}
        )
        return {k: v for k, v in found.items() if v is not None}

    def set_process(self, name: str, identity: ProcessIdentity) -> None:
        """Record (or update) one server process."""
        self.setdefault("processes", {})[name] = identity.to_json()


def lock_file(state_dir: Path) -> Path:
    """The lock of one state dir: in the invoking user's base (outside the state dir, so `down`
    may delete that while holding it), keyed by the state dir's path, never by a name a record
    holds."""
    key = hashlib.sha256(str(state_dir).encode()).hexdigest()[:24]
    return private.base_dir() / LOCKS / f"{key}.lock"


class Store:
    """The record of one state dir, changed only under that state dir's lock."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = StateDir(state_dir)

    @property
    def lock_file(self) -> Path:
        """The lock file (see lock_file())."""
        return lock_file(self.dir.path)

    @contextlib.contextmanager
    def locked(self, *, wait: bool = True) -> Iterator[bool]:
        """Hold the state dir's lock; yields False (without waiting) when busy and wait=False."""
        private.base()
        locks = private.make_private(
            private.base_dir() / LOCKS, what="lock directory", fix="remove it and retry"
        )
        path = locks / self.lock_file.name
        while True:
            fd = private.open_lock(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    os.close(fd)
                    yield False
                    return
                try:
                    wait_unless_frozen(fd, path, f"the lock of the state dir {self.dir.path}")
                except BaseException:
                    os.close(fd)
                    raise
            if is_current(fd, path):
                break
            # Its last holder removed the file while we waited: lock the one at the path now.
            os.close(fd)
        try:
            yield True
        finally:
            # A state dir that is gone (down, reap) needs its lock no more: remove it while still
            # held, so that a waiter finds another file at the path and locks that one instead.
            if not self.dir.path.exists():
                with contextlib.suppress(OSError):
                    path.unlink()
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def read(self) -> Record:
        """The record (empty when there is none, it is not ours or it does not parse)."""
        return read_record(self.dir.path)

    def write(self, record: Record) -> None:
        """Write the record atomically (status and reap read it without the lock)."""
        private.write_atomic(self.dir.path / RECORD, json.dumps(record, indent=2) + "\n")


def new_record(backend: str, settings: Settings, state_dir: Path, **extra: Any) -> Record:
    """The record of an instance about to start: backend, project, checkout, state dir, ports."""
    return Record(
        backend=backend,
        project=settings.project,
        checkout=str(settings.checkout),
        state_dir=str(state_dir),
        pg_port=settings.pg_port,
        redis_port=settings.redis_port,
        started_at=time.time(),
        **extra,
    )


def read_record(state_dir: Path) -> Record:
    """The record of a state dir that is ours (else empty: never trust others), validated
    before any use: its project and backend, its own path, ports, processes and leases."""
    if not StateDir(state_dir).is_ours():
        return Record()
    data = private.read_json(state_dir / RECORD)
    return Record(data) if data is not None and _valid_record(data, state_dir) else Record()


def _valid_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


def _valid_record(data: dict[str, Any], state_dir: Path) -> bool:
    # Every field testbed acts on, checked when present: a name by pattern, a path equal to
    # the state dir it was read from, ports and pids as ints.
    if data.get("backend") not in ("native", "docker"):
        return False
    if "project" in data and not _valid_project(data["project"]):
        return False
    if data.get("state_dir", str(state_dir)) != str(state_dir):
        return False
    if not isinstance(data.get("checkout", ""), str):
        return False
    if not all(_valid_port(data[key]) for key in ("pg_port", "redis_port") if key in data):
        return False
    procs, leases = data.get("processes", {}), data.get("leases", [])
    if not isinstance(procs, dict) or not isinstance(leases, list):
        return False
    if any(ProcessIdentity.from_json(p) is None for p in procs.values()):
        return False
    return all(Lease.from_json(x) is not None for x in leases)


def release_lease(record: Record, lease_id: str, *, keep: bool = False) -> bool:
    """End one lease (keep: hand the services to the user instead, as `python -m testbed up`
    would); True when nobody uses the instance any more, so whoever holds the lock should
    stop it."""
    record.drop_lease(lease_id)
    if keep:
        record.add_lease(new_lease(USER, None))
    record.reap_leases()
    return not record.leases()


def request_down(record: Record) -> list[Lease]:
    """`python -m testbed down`: end the user's lease and the caller's own (a script that
    took one), reap dead ones; return the live runs that still use the instance (stop it when
    there are none)."""
    me = os.getpid()
    record.drop_user_lease()
    record.set_leases([x for x in record.leases() if not (x.holder and x.holder.pid == me)])
    record.reap_leases()
    return record.leases()
