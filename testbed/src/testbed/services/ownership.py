"""Who started what, and who uses it: process identity, marked state dirs, the instance record
and its leases. Backend-neutral: native records server processes, docker its compose project
and container ids; both keep the record (and its leases) in their marked state dir.
"""

from __future__ import annotations

import contextlib
import fcntl
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

from testbed.errors import ServicesUnavailable, UsageError

if TYPE_CHECKING:
    from testbed.config import Settings

MARKER = ".testbed-state"  # in every state dir testbed made (or adopted while empty)
RECORD = "state.json"
_CMDLINE_TRIES = 40
USER = "user"  # the lease of `make up`: kept until `make down`
RUN = "run"


# -- process identity ------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcessIdentity:
    """A process as recorded when it started: pid, start time and command line(s).

    A pid alone proves nothing (pids are reused, pid files can be stale or forged); a process
    is the recorded one only when all three match. `titles` holds the command lines the
    process may show: servers like Valkey rewrite theirs once they run.
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

    def with_current_title(self) -> ProcessIdentity:
        """The same identity, also accepting the command line the process shows now."""
        now = ProcessIdentity.of(self.pid)
        if now is None or now.started != self.started or now.titles[0] in self.titles:
            return self
        return ProcessIdentity(self.pid, self.started, (*self.titles, now.titles[0]))

    def alive(self) -> bool:
        """True when pid is a live process with the recorded start time and command line."""
        now = ProcessIdentity.of(self.pid)
        if now is None or now.started != self.started:
            return False
        # An empty command line: the process is exiting or not readable to us; start time
        # and pid matched, which a reused pid cannot fake within one boot.
        return now.titles[0] in self.titles or now.titles[0] == ""

    def same_process(self) -> bool:
        """True while pid is the live process with the recorded start time, whatever its title.

        For the moments right after we started it: Valkey rewrites its title while it starts,
        so a title check then would call our own server dead.
        """
        now = ProcessIdentity.of(self.pid)
        return now is not None and now.started == self.started

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
@dataclass(frozen=True)
class StateDir:
    """A directory testbed made (or adopted while empty) and marked; it deletes only in these."""

    path: Path

    @property
    def marker(self) -> Path:
        """The marker file that makes the directory ours."""
        return self.path / MARKER

    def is_ours(self) -> bool:
        """True when the directory carries our marker."""
        return self.marker.is_file() and not self.marker.is_symlink()

    def _marker_data(self) -> dict[str, Any]:
        try:
            data = json.loads(self.marker.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def prepare(self, *, project: str, mode: int = 0o755) -> None:
        """Create and mark the directory, or check that it is ours; refuse anything else.

        Never changes the mode of a directory it did not create: the server account must
        be able to traverse the ones it creates, so those get mode (0755).
        """
        path = self.path
        try:
            if self.is_ours():
                return
            if path.is_dir():
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
                created = self._make(path, mode)
            tmp = path / f"{MARKER}.tmp"
            tmp.write_text(json.dumps({"project": project, "created": created}) + "\n")
            tmp.replace(self.marker)
        except OSError as exc:
            raise ServicesUnavailable(
                f"cannot prepare the state dir {path}: {exc.strerror or exc}; "
                "choose a writable E2E_STATE_DIR"
            ) from None

    def _legacy(self, project: str) -> bool:
        # A state dir an older testbed made for this project has its record but no marker.
        try:
            record = json.loads((self.path / RECORD).read_text())
        except (OSError, ValueError):
            return False
        return isinstance(record, dict) and record.get("project") == project

    @staticmethod
    def _make(path: Path, mode: int) -> list[str]:
        missing = []
        for parent in (path, *path.parents):
            if parent.exists():
                break
            missing.append(parent)
        for directory in reversed(missing):
            directory.mkdir()
            directory.chmod(mode)  # ours: the unprivileged server account must traverse it
        return [str(d) for d in missing]

    def remove(self) -> list[str]:
        """Delete the directory's contents, and the directory and parents we created; only
        when it carries our marker. Returns what was removed."""
        if not self.is_ours():
            return []
        created = [Path(p) for p in self._marker_data().get("created", []) if isinstance(p, str)]
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
        for directory in created:  # innermost first, only while empty
            with contextlib.suppress(OSError):
                directory.rmdir()
        return removed


# -- the instance record and its leases ---------------------------------------------------------
@dataclass(frozen=True)
class Lease:
    """One user of an instance: a run (its process identity) or the user (`make up`)."""

    id: str
    kind: str  # RUN or USER
    holder: ProcessIdentity | None
    since: float

    def alive(self) -> bool:
        """The user's lease lives until `make down`; a run's while its process does."""
        return self.kind == USER or (self.holder is not None and self.holder.alive())

    def describe(self) -> str:
        """'run pid 1234 (since 10:01:02)' or 'the user (make up)'."""
        if self.kind == USER:
            return "the user (make up; kept until make down)"
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
        if data["kind"] == RUN and holder is None:
            return None
        return cls(str(data.get("id")), str(data["kind"]), holder, float(data.get("since") or 0))


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
        """Remove the user's lease (`make down`); True if there was one."""
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


class Store:
    """The record of one state dir, changed only under the project's lock (in the cache, so
    removing the state dir while holding it is safe)."""

    def __init__(self, state_dir: Path, lock_file: Path) -> None:
        self.dir = StateDir(state_dir)
        self.lock_file = lock_file

    @contextlib.contextmanager
    def locked(self, *, wait: bool = True) -> Iterator[bool]:
        """Hold the project lock; yields False (without waiting) when busy and wait=False."""
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        with self.lock_file.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read(self) -> Record:
        """The record (empty when there is none or it is unreadable)."""
        return read_record(self.dir.path)

    def write(self, record: Record) -> None:
        """Write the record atomically (status and reap read it without the lock)."""
        tmp = self.dir.path / f"{RECORD}.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        # 0600: the record holds the URLs, passwords included.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(record, indent=2) + "\n")
        tmp.replace(self.dir.path / RECORD)


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
    """The record of a state dir that carries our marker (else empty: never trust others)."""
    if not StateDir(state_dir).is_ours():
        return Record()
    try:
        data = json.loads((state_dir / RECORD).read_text())
    except (OSError, ValueError):
        return Record()
    return Record(data) if isinstance(data, dict) else Record()


def release_lease(record: Record, lease_id: str, *, keep: bool = False) -> bool:
    """End one lease (keep: hand the services to the user instead, as `make up` would); True
    when nobody uses the instance any more, so whoever holds the lock should stop it."""
    record.drop_lease(lease_id)
    if keep:
        record.add_lease(new_lease(USER, None))
    record.reap_leases()
    return not record.leases()


def request_down(record: Record) -> list[Lease]:
    """`make down`: end the user's lease and the caller's own (a script that took one), reap dead
    ones; return the live runs that still use the instance (stop it when there are none)."""
    me = os.getpid()
    record.drop_user_lease()
    record.set_leases([x for x in record.leases() if not (x.holder and x.holder.pid == me)])
    record.reap_leases()
    return record.leases()
