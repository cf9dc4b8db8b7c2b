"""The floor: loopback round trip of `SELECT 1` (psycopg, one connection) and `PING` (redis-py)."""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import redis

from bench.context import Context
from bench.report import Figure

NAME = "floor"


def _timed(fn: Callable[[], object], n: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        fn()
        out.append((clock() - t0) * 1e6)
    return out


def run(ctx: Context) -> list[Figure]:
    """Median and p95 of SELECT 1 and PING over one connection each (µs)."""
    n = 1000 if ctx.quick else 5000
    with psycopg.connect(ctx.database_url, autocommit=True) as conn:
        cur = conn.cursor()

        def select1() -> None:
            cur.execute("SELECT 1")
            cur.fetchone()

        pg = _timed(select1, n, warmup=200)
    client = redis.Redis.from_url(ctx.redis_url)
    try:
        ping = _timed(client.ping, n, warmup=200)
    finally:
        client.close()
    return [
        Figure(
            "floor.select1",
            NAME,
            "SELECT 1 round trip (psycopg)",
            "µs",
            pg,
            reference="floor.select1",
            rtt="pg",
            note=f"{n} iterations on one autocommit connection over 127.0.0.1 TCP.",
        ),
        Figure(
            "floor.ping",
            NAME,
            "PING round trip (redis-py)",
            "µs",
            ping,
            reference="floor.ping",
            rtt="redis",
            note=f"{n} iterations on one connection over 127.0.0.1 TCP.",
        ),
    ]
