"""Redis logical databases handed out through the instance (keys in database 0), so two runs
on one Valkey never share a database: a worker's number comes from here, not its index alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from testbed.isolation.schema import _connect, run_lock_key
from testbed.isolation.sessions import NotEnoughDatabases

if TYPE_CHECKING:
    import redis

PREFIX = "testbed:redis-db:"  # + number; value "<run>:<worker>"
TTL_S = 120  # a killed run's databases come free after this; the live controller renews


def allocate(client: redis.Redis[str], run_id: str, worker: str, available: int) -> int:
    """Claim a free database (1..available-1) for run_id's worker; database 0 stays shared."""
    for number in range(1, available):
        if client.set(f"{PREFIX}{number}", f"{run_id}:{worker}", nx=True, ex=TTL_S):
            flush(client, number)  # a dead run may have left keys in it
            return number
    raise NotEnoughDatabases(
        f"all {available - 1} Valkey databases are in use by other runs; wait for them to "
        "finish, or run fewer workers (-n)"
    )


def flush(client: redis.Redis[str], number: int) -> None:
    """FLUSHDB one database (never database 0)."""
    if number == 0:
        raise ValueError("database 0 holds every run's shared keys; it is never flushed")
    import redis as redis_lib

    url = client.connection_pool.connection_kwargs
    other = redis_lib.Redis(
        host=url.get("host", "127.0.0.1"),
        port=url.get("port", 6379),
        password=url.get("password"),
        username=url.get("username"),
        db=number,
        socket_timeout=url.get("socket_timeout"),
        socket_connect_timeout=url.get("socket_connect_timeout"),
    )
    try:
        other.flushdb()
    finally:
        other.close()


def held(client: redis.Redis[str]) -> dict[int, str]:
    """Every allocation: database number -> "<run>:<worker>"."""
    found = {}
    for key in client.scan_iter(match=f"{PREFIX}*", count=1000):
        value = client.get(key)
        if value is not None:
            found[int(str(key).removeprefix(PREFIX))] = str(value)
    return found


def renew(client: redis.Redis[str], run_id: str) -> None:
    """Keep run_id's databases claimed for another TTL (the controller calls this while alive)."""
    for number, owner in held(client).items():
        if owner.startswith(f"{run_id}:"):
            client.expire(f"{PREFIX}{number}", TTL_S)


def release(
    client: redis.Redis[str],
    run_id: str | None = None,
    *,
    dead: Callable[[str], bool] | None = None,
) -> list[int]:
    """Flush and free the databases of run_id (or of every run for which dead(run) is true)."""
    freed = []
    for number, owner in held(client).items():
        run = owner.split(":", 1)[0]
        if run == run_id or (dead is not None and dead(run)):
            flush(client, number)
            client.delete(f"{PREFIX}{number}")
            freed.append(number)
    return freed


def run_alive(database_url: str, run_id: str) -> bool:
    """True while the run's controller holds its advisory lock (it dies with the run)."""
    with _connect(database_url) as conn:
        key = run_lock_key(run_id)
        row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()
        if row and row[0]:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", key)
            return False
        return True


__all__ = ["PREFIX", "TTL_S", "allocate", "flush", "held", "release", "renew", "run_alive"]
