"""Process helpers for the native backend: who runs the servers, spawn detached, stop bounded."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account the servers run as when we are root."""

    name: str
    uid: int
    gid: int


def server_user() -> RunAs | None:
    """None when not root; else the `postgres` account, or `nobody` if there is none."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return RunAs(name, entry.pw_uid, entry.pw_gid)
    raise OSError(
        "running as root, but there is neither a `postgres` nor a `nobody` account "
        "to run PostgreSQL as (it refuses root); create one or run as a normal user"
    )


def chown(path: Path, run_as: RunAs | None) -> None:
    """Give path to the server account (no-op when not root)."""
    if run_as is not None:
        os.chown(path, run_as.uid, run_as.gid)


def server_env(library_dir: Path | None = None) -> dict[str, str]:
    """Environment for the servers: ours minus PG* variables that would redirect them, with
    library_dir first on the loader path (a relocated build's modules must find its own libpq)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if library_dir is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(library_dir), env.get("LD_LIBRARY_PATH", "")) if p
        )
    return env


def run_as_kwargs(run_as: RunAs | None) -> dict[str, object]:
    """subprocess keyword arguments that drop root privileges (and supplementary groups)."""
    if run_as is None:
        return {}
    return {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}


def spawn(
    argv: list[str],
    *,
    log: Path,
    run_as: RunAs | None,
    cwd: Path,
    library_dir: Path | None = None,
) -> int:
    """Start a server in its own session (survives our exit, gets no terminal signals)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(  # type: ignore[call-overload]  # kwargs from run_as_kwargs
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=server_env(library_dir),
            start_new_session=True,
            close_fds=True,
            **run_as_kwargs(run_as),
        )
    pid: int = proc.pid
    return pid


def _reap_child(pid: int) -> None:
    # If the server is our own child (foreground mode, tests), collect it so it is no zombie.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def cmdline(pid: int) -> str:
    """The process's command line ('' when it is gone or not visible)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def is_alive(pid: int) -> bool:
    """True if pid is a live (non-zombie) process."""
    _reap_child(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): kill(0) is all we have
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def is_ours(pid: int, marker: str) -> bool:
    """True if pid is alive and its command line contains marker (guards against pid reuse)."""
    if not is_alive(pid):
        return False
    if not Path("/proc/self").exists():
        return True  # no /proc (macOS): the pid file is all we have
    if marker in cmdline(pid):
        return True
    # cmdline can read empty for a moment around exec; comm (15 chars max) does not.
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    return bool(comm) and comm == marker[:15]


def stop(pid: int, sig: int = signal.SIGTERM, timeout: float = 10.0) -> bool:
    """Send sig, wait up to timeout, then SIGKILL the process group; True if it had to kill."""
    if not is_alive(pid):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return False
        time.sleep(0.01)
    try:
        os.killpg(pid, signal.SIGKILL)  # start_new_session made pid its group leader
    except (ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(200):
        if not is_alive(pid):
            break
        time.sleep(0.01)
    return True


def read_pid(path: Path) -> int | None:
    """The pid in a pid file, or None if missing/garbled."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
