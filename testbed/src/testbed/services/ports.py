"""Port checks: is 127.0.0.1:<port> free, and if not, who holds it (best effort via /proc)."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from testbed.errors import PortConflict

_LISTEN = "0A"  # TCP state code for LISTEN in /proc/net/tcp
_TIME_WAIT = "06"


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on host:port (we could bind it right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a socket in TIME_WAIT from our own last run is not a conflict.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _sockets(port: int, proc: Path) -> list[tuple[str, str]]:
    """(TCP state code, inode) of every socket whose local port is port."""
    found = []
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and int(cols[1].rsplit(":", 1)[1], 16) == port:
                found.append((cols[3], cols[9]))
    return found


def _listen_inodes(port: int, proc: Path) -> set[str]:
    return {inode for state, inode in _sockets(port, proc) if state == _LISTEN}


def ephemeral_range(proc: Path = Path("/proc")) -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux default 32768-60999)."""
    try:
        low, high = (proc / "sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _invisible_holder(port: int, env: str, proc: Path) -> str:
    """Why bind failed when no listener we can see holds the port, and what to do."""
    states = {state for state, _ in _sockets(port, proc)}
    low, high = ephemeral_range(proc)
    if _LISTEN in states:
        # /proc shows a socket's owner only to its user, or to root with CAP_SYS_PTRACE (which
        # a default container's root lacks).
        why = "held by a process testbed cannot see (another user's, or inside a container)"
    elif _TIME_WAIT in states:
        why = (
            "held by a connection in TIME_WAIT (it clears within a minute; "
            f"`ss -tan | grep :{port}`)"
        )
    elif states:
        why = f"held by an open connection using it as its local port (`ss -tan | grep :{port}`)"
    else:
        why = f"not bindable; a connection in TIME_WAIT may hold it (`ss -tan | grep :{port}`)"
    if low <= port <= high:
        return (
            f"{why}: {port} is in the range {low}-{high} the kernel hands out to outgoing "
            f"connections. Choose a port below {low} with {env}=<port>."
        )
    return f"{why}. Stop it, or choose another port with {env}=<port>."


def _command(pid: int, proc: Path) -> str:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip() or "?"


def holder(port: int, proc: Path = Path("/proc")) -> tuple[int, str] | None:
    """(pid, command line) of the process listening on port, when /proc lets us see it."""
    inodes = _listen_inodes(port, proc)
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue  # another user's process, or it just exited
        for fd in fds:
            try:
                if os.readlink(fd) in targets:
                    return int(entry.name), _command(int(entry.name), proc)
            except OSError:
                continue
    return None


def describe_holder(port: int) -> str | None:
    """'pid 1234 (postgres -D ...)' for the port's holder, or None when not visible."""
    found = holder(port)
    if found is None:
        return None
    pid, command = found
    short = command if len(command) <= 120 else command[:117] + "..."
    return f"pid {pid} ({short})"


def check_free(port: int, *, service: str, env: str) -> None:
    """Raise PortConflict naming the port and its holder if 127.0.0.1:port is taken."""
    if is_free(port):
        return
    who = describe_holder(port)
    if who is None:
        raise PortConflict(
            f"port {port} for {service} is {_invisible_holder(port, env, Path('/proc'))}",
            port=port,
        )
    raise PortConflict(
        f"port {port} for {service} is held by {who}, which is not ours. "
        f"Stop it, or choose another port with {env}=<port>.",
        port=port,
        holder=who,
    )
