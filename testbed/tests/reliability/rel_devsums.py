"""Read-only fingerprints of the developer's PostgreSQL (5432) and Redis (6379).

Never writes: every PostgreSQL session is read-only (default_transaction_read_only) and Redis
only sees INFO, SCAN, TYPE, PTTL and DUMP.
"""

from __future__ import annotations

import hashlib
from typing import Any

DEV_PG = "postgresql://postgres@127.0.0.1:5432/{db}"
DEV_REDIS = "redis://127.0.0.1:6379/{db}"
_EXACT_ROWS = 200_000  # hash every row of tables up to this size; count(*) above


def _pg_connect(db: str) -> Any:
    import psycopg

    return psycopg.connect(
        DEV_PG.format(db=db),
        autocommit=True,
        connect_timeout=5,
        options="-c default_transaction_read_only=on -c statement_timeout=30s",
    )


def postgres_fingerprint() -> dict[str, str]:
    """{database: digest of its schemas, tables and every row}; {} if 5432 does not answer."""
    import psycopg
    from psycopg import sql

    try:
        conn = _pg_connect("postgres")
    except psycopg.OperationalError:
        return {}
    with conn:
        dbs = [
            r[0]
            for r in conn.execute("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1")
        ]
    out: dict[str, str] = {"reachable": "yes"}
    for db in dbs:
        digest = hashlib.sha256()
        with _pg_connect(db) as conn:
            for (nsp,) in conn.execute("SELECT nspname FROM pg_namespace ORDER BY 1"):
                digest.update(f"schema {nsp}\n".encode())
            tables = conn.execute(
                "SELECT n.nspname, c.relname, c.reltuples FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', "
                "'information_schema') AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1, 2"
            ).fetchall()
            for nsp, rel, approx in tables:
                ident = sql.Identifier(nsp, rel)
                if approx <= _EXACT_ROWS:
                    query = sql.SQL(
                        "SELECT count(*), coalesce(md5(string_agg(t::text, ',' ORDER BY "
                        "t::text)), '') FROM {} t"
                    ).format(ident)
                else:
                    query = sql.SQL("SELECT count(*), '' FROM {}").format(ident)
                count, rows = conn.execute(query).fetchone()  # type: ignore[misc]
                digest.update(f"table {nsp}.{rel} {count} {rows}\n".encode())
        out[db] = digest.hexdigest()
    return out


def redis_fingerprint() -> dict[str, str]:
    """{db number: 'DBSIZE digest'} over every key's type, TTL presence and DUMP; {} if down."""
    import redis

    probe = redis.Redis.from_url(DEV_REDIS.format(db=0), socket_timeout=5, socket_connect_timeout=5)
    try:
        keyspace = probe.info("keyspace")
    except redis.ConnectionError:
        return {}
    finally:
        probe.close()
    out: dict[str, str] = {"reachable": "yes"}
    for name in sorted(keyspace):
        db = int(str(name).removeprefix("db"))
        client = redis.Redis.from_url(DEV_REDIS.format(db=db), socket_timeout=5)
        try:
            digest = hashlib.sha256()
            for key in sorted(client.scan_iter(count=1000)):
                ttl = client.pttl(key)
                digest.update(key + b"\0" + str(client.type(key)).encode())
                digest.update(b"ttl" if ttl and ttl > 0 else b"none")
                digest.update(client.dump(key) or b"")
            out[str(db)] = f"{client.dbsize()} {digest.hexdigest()}"
        finally:
            client.close()
    return out


def dev_fingerprint() -> dict[str, dict[str, str]]:
    """Both fingerprints together."""
    return {"postgres": postgres_fingerprint(), "redis": redis_fingerprint()}
