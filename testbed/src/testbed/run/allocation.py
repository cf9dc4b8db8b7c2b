"""Redis logical databases handed out through the instance (keys in database 0), so two runs
on one Valkey never share a database: a worker's number comes from here, not its index alone.

A claim is alive while its TTL has not run out: the owning run's controller renews it on its
monitor's tick, so a killed run's claims expire by themselves. Nothing else judges a claim
dead (an advisory lock would only be visible in the database the caller happens to use, and
two projects on one Valkey use two databases).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from testbed.isolation.sessions import NotEnoughDatabases

if TYPE_CHECKING:
    import redis

PREFIX = "testbed:redis-db:"  # + number; value "<run>:<worker>"
TTL_S = 60  # a killed run's databases come free after this; the live controller renews
RENEW_EVERY_S = TTL_S / 6  # so a controller late by a few ticks under load keeps its claims
# Extend a claim only while it is still the caller's: a lapsed one may be another run's now.
_RENEW = """
local n = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
    n = n + 1
  end
end
return n
"""


def allocate(client: redis.Redis[str], run_id: str, worker: str, available: int) -> int:
    """Claim a free database (1..available-1) for run_id's worker; database 0 stays shared.
    Asked again for the same worker (the controller, then the worker itself), the same one."""
    for number, owner in held(client).items():
        if owner == f"{run_id}:{worker}":
            return number
    for number in range(1, available):
        if client.set(f"{PREFIX}{number}", f"{run_id}:{worker}", nx=True, px=TTL_S * 1000):
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


def renew(client: redis.Redis[str], run_id: str, ttl_s: float = TTL_S) -> int:
    """Keep run_id's databases claimed for another TTL (the controller calls this while alive);
    returns how many it renewed."""
    mine = {n: owner for n, owner in held(client).items() if owner.startswith(f"{run_id}:")}
    if not mine:
        return 0
    keys = [f"{PREFIX}{n}" for n in mine]
    renewed = client.eval(_RENEW, len(keys), *keys, int(ttl_s * 1000), *mine.values())  # type: ignore[no-untyped-call]
    return int(renewed)


def release(client: redis.Redis[str], run_id: str) -> list[int]:
    """Flush and free the databases of run_id (its own, at the end of the run)."""
    freed = []
    for number, owner in held(client).items():
        if owner.split(":", 1)[0] == run_id:
            flush(client, number)
            client.delete(f"{PREFIX}{number}")
            freed.append(number)
    return freed


__all__ = ["PREFIX", "RENEW_EVERY_S", "TTL_S", "allocate", "flush", "held", "release", "renew"]
