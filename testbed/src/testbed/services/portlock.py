"""A machine-wide lock per port, held while one checkout starts services on it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import psutil

from testbed.config import TOOL
from testbed.errors import InUse, PortConflict

# Fixed /tmp, not $TMPDIR: every user and every checkout on the machine must meet at one file.
LOCK_DIR = Path("/tmp")  # noqa: S108
_POLL = 0.05


def lock_path(port: int, lock_dir: Path | None = None) -> Path:
    """The lock file for one port, e.g. /tmp/testbed-port-5433.lock (one for every project:
    two apps on one port must exclude each other too)."""
    return (lock_dir or LOCK_DIR) / f"{TOOL}-port-{port}.lock"


def _open(path: Path) -> int:
    flags = os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags | os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        # No O_CREAT here: with fs.protected_regular, O_CREAT on another user's file in
        # sticky /tmp fails even for root. flock needs no write access.
        return os.open(path, flags | os.O_RDONLY)
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o666)  # the umask trimmed it; any user must be able to open it later
    return fd


def is_current(fd: int, path: Path) -> bool:
    """True when path still names the file fd has open (a releaser may have unlinked it)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _acquire(port: int, path: Path, deadline: float, say: Callable[[str], None]) -> int:
    fd = _open(path)
    waited = False
    started = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if is_current(fd, path):
                    return fd
                # The holder unlinked it on release: lock the file that is there now.
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                fd = _open(path)
                continue
            except BlockingIOError:
                pass
            if not waited:
                say(f"waiting for another checkout starting services on port {port}…")
                waited = True
            if time.monotonic() >= deadline:
                raise PortConflict(
                    f"port {port}: another checkout has been starting services on it for "
                    f"{time.monotonic() - started:.0f} s and still holds {path}. Wait for it "
                    "to finish, or use other ports (E2E_PG_PORT=… E2E_REDIS_PORT=…).",
                    port=port,
                )
            time.sleep(_POLL)
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def port_lock(
    ports: Iterable[int],
    *,
    timeout: float,
    say: Callable[[str], None],
    lock_dir: Path | None = None,
) -> Iterator[None]:
    """Hold the machine-wide lock of every port (ascending, so two callers cannot deadlock)."""
    deadline = time.monotonic() + timeout
    held: list[tuple[Path, int]] = []
    try:
        for port in sorted(set(ports)):
            path = lock_path(port, lock_dir)
            held.append((path, _acquire(port, path, deadline, say)))
        yield
    finally:
        # Unlinked while still locked, so lock files do not pile up in /tmp; a waiter that
        # then gets the old inode notices (is_current) and locks the new file instead.
        for path, fd in reversed(held):
            with contextlib.suppress(OSError):
                if is_current(fd, path):
                    os.unlink(path)
            os.close(fd)  # closing the last descriptor releases the flock


_FROZEN_FOR = 1.0  # seconds a lock holder stays stopped before a waiter gives up on it


def wait_unless_frozen(fd: int, path: Path, what: str) -> None:
    """Take the flock on fd (the file at path) once its holder lets go, however long its work
    takes; but refuse, naming it, a holder that stays stopped (Ctrl-Z, SIGSTOP): it would never
    let go, and every later command would wait for it silently. `what` names the lock."""
    stopped_since: float | None = None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        holder = lock_holder(path)
        now = time.monotonic()
        stopped_since = (stopped_since or now) if holder and _stopped(holder) else None
        if holder and stopped_since is not None and now - stopped_since >= _FROZEN_FOR:
            raise InUse(
                f"{_describe(holder)} holds {what} and is stopped (Ctrl-Z or SIGSTOP): run "
                f"`kill -CONT {holder}` (or `fg` in its terminal) to let it finish, or end it, "
                "then retry"
            )
        time.sleep(_POLL)  # a lock held for a whole start or download: polled, to see a freeze


def lock_holder(path: Path) -> int | None:
    """The pid /proc/locks names for a flock on path, if any (the process that took it)."""
    try:
        st = path.stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in table.splitlines():
        fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:1531944 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == where:
            with contextlib.suppress(ValueError):
                pid = int(fields[4])
                return pid if pid > 0 else None  # 0: a holder in another pid namespace
    return None


def _stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.Error:
        return False


def _describe(pid: int) -> str:
    try:
        return f"pid {pid} ({' '.join(psutil.Process(pid).cmdline())[:80]})"
    except psutil.Error:
        return f"pid {pid}"
