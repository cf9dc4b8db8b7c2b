"""Process helpers for the native backend: who runs the servers, spawn detached, stop bounded
(only a process whose recorded identity still matches)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable
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


SERVICE_ACCOUNT = "testbed-svc"
# Accounts the servers must never run as: the system `postgres` account owns the developer's
# PostgreSQL (a server running as it could read and stop theirs), and `nobody` is every other
# unprivileged daemon's (and any attacker's) account.
FORBIDDEN_ACCOUNTS = frozenset({"root", "postgres", "nobody"})
_NOLOGIN = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false")


def server_user(*, create: bool = True, say: Callable[[str], None] | None = None) -> RunAs | None:
    """None when not root (the servers run as the invoking user); as root, the dedicated
    unprivileged account testbed-svc, created on first use (never `postgres` or `nobody`)."""
    if os.geteuid() != 0:
        return None
    found = _account(SERVICE_ACCOUNT)
    if found is None and create:
        _create_account(SERVICE_ACCOUNT)
        found = _account(SERVICE_ACCOUNT)
        if found is not None and say is not None:
            say(
                f"created the system account {SERVICE_ACCOUNT!r} (uid {found.uid}, no login, "
                "no home) to run the E2E servers as: never root, postgres or nobody"
            )
    if found is None:
        raise OSError(
            f"running as root, but there is no {SERVICE_ACCOUNT!r} account to run the servers "
            f"as (PostgreSQL refuses root): create one with `useradd --system --no-create-home "
            f"--shell /usr/sbin/nologin --user-group {SERVICE_ACCOUNT}`, or run as a normal user"
        )
    return found


def _account(name: str) -> RunAs | None:
    """The account name if it exists and is fit to run the servers; raise if it is not."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    sharing = sorted(
        e.pw_name for e in pwd.getpwall() if e.pw_uid == entry.pw_uid and e.pw_name != name
    )
    problem = None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        problem = "has uid or gid 0"
    elif sharing:
        problem = f"shares its uid {entry.pw_uid} with {', '.join(sharing)}"
    elif entry.pw_shell not in _NOLOGIN:
        problem = f"has the login shell {entry.pw_shell}"
    if problem is not None:
        raise OSError(
            f"the account {name!r} {problem}, so testbed will not run its servers as it: "
            f"remove it (`userdel {name}`) and testbed creates a fresh one, or run as a normal user"
        )
    return RunAs(name, entry.pw_uid, entry.pw_gid)


def _create_account(name: str) -> None:
    """useradd a system account with no login and no home (a concurrent run may win: fine)."""
    useradd = shutil.which("useradd") or next(
        (p for p in ("/usr/sbin/useradd", "/sbin/useradd") if Path(p).is_file()), None
    )
    if useradd is None:
        return  # server_user() says what to do
    shell = next((s for s in _NOLOGIN if Path(s).exists()), "/usr/sbin/nologin")
    argv = [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent"]
    # Below 900: container images put their users at 999 and just under (valkey's is 999), and
    # a container's process with our uid could reach our servers' files.
    argv += ["-K", "SYS_UID_MAX=899", "-K", "SYS_GID_MAX=899"]
    argv += ["--shell", shell, "--user-group", name]
    subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


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


# The server's command runs only once the gate reads a line: EOF (we died, or gave up) ends it.
_GATE = ("/bin/sh", "-c", 'read -r go && exec "$@" </dev/null', "testbed-gate")


def spawn(
    argv: list[str],
    *,
    log: Path,
    run_as: RunAs | None,
    cwd: Path,
    record: Callable[[ProcessIdentity], None],
    library_dir: Path | None = None,
) -> ProcessIdentity:
    """Start a server in its own session (survives our exit, gets no terminal signals), and
    return its identity. The server runs only after record(identity) returned: a run killed or
    interrupted before that leaves a gate that exits, never a server nobody recorded."""
    from testbed.services.private import open_append

    with os.fdopen(open_append(log), "ab") as out:  # never through a planted link
        proc = subprocess.Popen(  # type: ignore[call-overload]  # kwargs from run_as_kwargs
            [*_GATE, *argv],
            stdin=subprocess.PIPE,
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
    gate = proc.stdin
    assert gate is not None  # stdin=PIPE
    try:
        found = ProcessIdentity.of(proc.pid)
        # The gate's title, then the server's: exec keeps the pid and start time.
        titles = (*(found.titles if found else ()), " ".join(argv))
        identity = ProcessIdentity(proc.pid, found.started if found else 0.0, titles)
        record(identity)
        gate.write(b"go\n")
    finally:
        with contextlib.suppress(OSError):  # a gate that already exited: nothing to open
            gate.close()
    return identity


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
