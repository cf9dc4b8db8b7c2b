"""Whose server answers on a port: our own, or another checkout's testbed services (which)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from testbed.config import STATE_DIR_GLOB
from testbed.errors import PortConflict
from testbed.report import command
from testbed.services.endpoints import Endpoints
from testbed.services.ownership import read_record
from testbed.services.ports import holder, is_free

_SERVERS = (("postgres", "pg_port"), ("valkey", "redis_port"))
_DEV_PORTS = frozenset({5432, 6379})  # a developer's own databases: never suggest these


@dataclass(frozen=True)
class OtherCheckout:
    """Another checkout's services: its state dir, the server pid, and where it lives."""

    state_dir: Path
    pid: int | None = None
    checkout: str | None = None
    project: str | None = None

    def describe(self) -> str:
        """'project shop-e2e-1a2b3c4d, state dir /dev/shm/testbed-0/shop-e2e-1a2b3c4d, pid 1234'."""
        project = f"project {self.project}, " if self.project else ""
        pid = f", pid {self.pid}" if self.pid is not None else ""
        return f"{project}state dir {self.state_dir}{pid}"


def postgres_data_dir(url: str) -> str:
    """The data directory of the PostgreSQL server answering at url."""
    import psycopg

    with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('data_directory')").fetchone()
    return str(row[0]) if row else ""


def valkey_pid(url: str) -> int:
    """The process id the Valkey server answering at url reports (INFO server)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        return int(client.info("server").get("process_id", -1))
    finally:
        client.close()


def state_dir_of_data_dir(data_dir: str) -> Path | None:
    """<state>/pg/data → <state>: the layout every checkout's native backend uses."""
    path = Path(data_dir)
    if path.name == "data" and path.parent.name == "pg":
        return path.parent.parent
    return None


def _dirs_from_holder(pid: int, command: str) -> list[Path]:
    found = []
    argv = command.split()
    if "-D" in argv[:-1]:  # postgres keeps its argv (an older testbed's valkey did not: cwd)
        state = state_dir_of_data_dir(argv[argv.index("-D") + 1])
        if state is not None:
            found.append(state)
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        cwd = None  # another user's process: its cwd is private
    if cwd is not None and cwd.name in ("pg", "valkey"):
        found.append(cwd.parent)
    return found


def other_checkout(port: int, roots: Iterable[Path], *, exclude: Path) -> OtherCheckout | None:
    """The live testbed services of another checkout on port, if any (by their records)."""
    seen = holder(port)
    candidates: list[Path] = _dirs_from_holder(*seen) if seen else []
    for root in dict.fromkeys(roots):
        if root.is_dir():
            candidates += sorted(root.glob(STATE_DIR_GLOB))
    for state_dir in dict.fromkeys(candidates):
        if state_dir == exclude:
            continue
        record = read_record(state_dir)
        procs = record.processes()
        for name, key in _SERVERS:
            proc = procs.get(name)
            if record.get(key) != port or proc is None:
                continue
            # The visible listener must be that process; when we cannot see it, it must live.
            if (seen[0] == proc.pid and proc.alive()) if seen else proc.alive():
                checkout, project = record.get("checkout"), record.get("project")
                return OtherCheckout(
                    state_dir,
                    proc.pid,
                    str(checkout) if checkout else None,
                    str(project) if project else None,
                )
    return None


def spare_port(near: int, *, avoid: Iterable[int] = ()) -> int | None:
    """A free port just above near, below the ephemeral range (32768+), for suggestions."""
    base = near if near < 32000 else 20000 + near % 1000
    skip = _DEV_PORTS | set(avoid)
    for port in range(base + 1, base + 200):
        if port not in skip and is_free(port):
            return port
    return None


def suggest_ports(pg_port: int, redis_port: int) -> str:
    """'E2E_PG_PORT=5434 E2E_REDIS_PORT=6381': free ports to try instead."""
    pg = spare_port(pg_port, avoid=(pg_port, redis_port))
    redis = spare_port(redis_port, avoid=(pg_port, redis_port, pg or 0))
    return f"E2E_PG_PORT={pg or '<port>'} E2E_REDIS_PORT={redis or '<port>'}"


def held_by_other(port: int, other: OtherCheckout, ports: tuple[int, int]) -> PortConflict:
    """PortConflict for a port that another checkout's testbed services hold."""
    if other.checkout and not Path(other.checkout).exists():
        fix = f"its checkout {other.checkout} is gone: run {command('reap')} here"
    else:
        fix = f"run {command('down')} {f'in {other.checkout}' if other.checkout else 'there'}"
    return PortConflict(
        f"port {port} is held by the E2E services of another checkout "
        f"({other.describe()}): {fix}, or use other ports: {suggest_ports(*ports)}",
        port=port,
        holder=other.describe(),
    )


def lost_race(
    port: int, service: str, seen: str, other: OtherCheckout | None, ports: tuple[int, int]
) -> PortConflict:
    """PortConflict for a server of ours that lost its port to another one while starting."""
    lead = f"the {service} answering on port {port} is not the one we started ({seen}): "
    if other is not None:
        conflict = held_by_other(port, other, ports)
        lead += "we stopped ours. "
        return PortConflict(
            lead + str(conflict)[0].upper() + str(conflict)[1:], port=port, holder=conflict.holder
        )
    return PortConflict(
        lead + "another process took the port while ours started; we stopped ours. "
        f"Stop it, or use other ports: {suggest_ports(*ports)}",
        port=port,
        holder=seen,
    )


def verify_ours(
    eps: Endpoints,
    pg_data: Path,
    vk_pid: int,
    ports: tuple[int, int],
    other: Callable[[int], OtherCheckout | None],
) -> None:
    """Raise PortConflict if a server that passed its health gate is not the one we spawned.

    Same role, database and trust auth everywhere: a server that lost the bind race would
    otherwise pass its health gate through the winner's server.
    """
    seen_dir = postgres_data_dir(eps.database_url)
    if Path(seen_dir).resolve() != pg_data.resolve():
        other_dir = state_dir_of_data_dir(seen_dir)
        found = other(ports[0]) or (OtherCheckout(other_dir) if other_dir else None)
        raise lost_race(ports[0], "PostgreSQL", f"data directory {seen_dir}", found, ports)
    seen_pid = valkey_pid(eps.redis_url)
    if seen_pid != vk_pid:
        seen = f"pid {seen_pid}, ours is {vk_pid}"
        raise lost_race(ports[1], "Valkey", seen, other(ports[1]), ports)
