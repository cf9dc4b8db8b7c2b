"""Port checks: is 127.0.0.1:<port> free, and if not, who holds it (best effort via /proc)."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from testbed.errors import PortConflict

_LISTEN = "0A"  # TCP state code for LISTEN in /proc/net/tcp


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


def _listen_inodes(port: int, proc: Path) -> set[str]:
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == _LISTEN and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


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
    held = f"held by {who}" if who else "held by a process we cannot see (another user's?)"
    raise PortConflict(
        f"port {port} for {service} is {held}, which is not ours. "
        f"Stop it, or choose another port with {env}=<port>.",
        port=port,
        holder=who,
    )
