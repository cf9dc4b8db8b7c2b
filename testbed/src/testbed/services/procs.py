"""Process helpers for the native backend: who runs the servers, spawn detached, stop bounded
(only a process whose recorded identity still matches)."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from testbed.services.ownership import ProcessIdentity


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


def blocked_for(path: Path, run_as: RunAs) -> Path | None:
    """The first existing directory on the way to path that run_as cannot enter, if any."""
    for directory in reversed([path, *path.parents]):
        try:
            st = directory.stat()
        except OSError:
            continue  # not there yet: we create it (0755)
        if not stat.S_ISDIR(st.st_mode):
            continue
        if st.st_uid == run_as.uid:
            bit = stat.S_IXUSR
        elif st.st_gid == run_as.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return directory
    return None


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
    from testbed.services.private import open_append

    with os.fdopen(open_append(log), "ab") as out:  # never through a planted link
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
    # Kept, not dropped: a Popen collected while its process runs warns (ResourceWarning), and
    # under a suite's `filterwarnings = error` that failed a green run.
    _CHILDREN[proc.pid] = proc
    return int(proc.pid)


# The servers this process spawned and has not seen exit (until we exit: they outlive us).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _reap_child(pid: int) -> None:
    # If the server is our own child (foreground mode, tests), collect it so it is no zombie.
    proc = _CHILDREN.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_alive(pid: int) -> bool:
    """True if pid is a live (non-zombie) process."""
    _reap_child(pid)
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return False


def stop(identity: ProcessIdentity, sig: int = signal.SIGTERM, timeout: float = 10.0) -> bool:
    """Stop the recorded process (only if it still is that process): sig, then SIGCONT so a
    frozen one handles it, wait up to timeout, then SIGKILL its group. True if it had to kill."""
    if not identity.alive():
        return False
    pid = identity.pid
    try:
        os.kill(pid, sig)
        # A SIGSTOPped server (and its children: it leads its own group) would never act on sig.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGCONT)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return False
        time.sleep(0.01)
    if not identity.alive():
        return False
    try:
        os.killpg(pid, signal.SIGKILL)  # start_new_session made pid its group leader
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for _ in range(500):
        if not is_alive(pid):
            break
        time.sleep(0.01)
    return True
