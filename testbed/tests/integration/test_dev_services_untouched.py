"""A full lifecycle leaves the developer's PostgreSQL (5432) and Redis (6379) as they were."""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg
import pytest
import redis

from testbed.services.native import NativeBackend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

DEV_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
DEV_REDIS = "redis://127.0.0.1:6379/0"


def dev_snapshot() -> dict[str, Any]:
    """Read-only fingerprint of the dev services (skips when they are not here)."""
    try:
        # Read-only session: even a bug in this test cannot write to the dev database.
        with psycopg.connect(
            DEV_PG, connect_timeout=2, options="-c default_transaction_read_only=on"
        ) as conn:
            rows = conn.execute(
                "SELECT count(*), string_agg(datname, ',' ORDER BY datname),"
                " pg_postmaster_start_time() FROM pg_database"
            ).fetchone()
    except psycopg.OperationalError as exc:
        pytest.skip(f"no readable dev PostgreSQL on 5432 ({exc})")
    client = redis.Redis.from_url(DEV_REDIS, socket_timeout=2)
    try:
        keys = sorted(client.scan_iter(count=1000))
        info = client.info()
        dev_redis = {
            "run_id": info["run_id"],
            "keyspace": {k: v for k, v in info.items() if k.startswith("db")},
            "keys": hashlib.sha256(b"\0".join(keys)).hexdigest(),
        }
    except redis.ConnectionError as exc:
        pytest.skip(f"no dev Redis on 6379 ({exc})")
    finally:
        client.close()
    return {"pg": rows, "redis": dev_redis}


def test_dev_services_are_untouched_by_a_full_lifecycle(native: NativeBackend) -> None:
    before = dev_snapshot()
    eps = native.up()
    with psycopg.connect(eps.database_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA e2e_writes")
        conn.execute("CREATE TABLE e2e_writes.t AS SELECT generate_series(1, 100) AS n")
    client = redis.Redis.from_url(eps.redis_url)
    try:
        client.mset({f"e2e:{i}": i for i in range(100)})
        client.flushdb()
    finally:
        client.close()
    native.down()
    native.reap()
    assert dev_snapshot() == before
