"""The bench's own services, started through testbed on non-default ports with their own state dir.

They never touch a developer's `make up` services (5433/6380, default state dir) and are removed at
the end of the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The bench's ports: away from the dev databases (5432/6379) and from `make up` (5433/6380).
PG_PORT = int(os.environ.get("BENCH_PG_PORT", "55443"))
REDIS_PORT = int(os.environ.get("BENCH_REDIS_PORT", "56390"))
# Environment settings the bench honours (where binaries and caches are); everything else is ours.
PASSTHROUGH = (
    *("E2E_PG_BIN", "E2E_VALKEY_BIN", "E2E_CACHE_DIR", "E2E_WAIT_TIMEOUT"),
    *("E2E_PG_IMAGE", "E2E_REDIS_IMAGE"),
)


def state_root() -> Path:
    """Parent of the bench's state dirs: the same storage the default `make up` uses."""
    from testbed.config import default_state_root

    return default_state_root()


def bench_settings(*, state_dir: Path, cache_dir: Path | None = None, **overrides: Any) -> Any:
    """testbed Settings of the bench's own (ports, state dir, cache): native unless overridden
    (backend="docker" with a compose project of its own)."""
    from testbed.config import load_settings

    env = {k: v for k, v in os.environ.items() if k in PASSTHROUGH}
    # testbed's lock and reaper key on the project: keep it ours.
    values: dict[str, Any] = {"backend": "native", "project": state_dir.name, **overrides}
    return load_settings(
        env,
        pg_port=PG_PORT,
        redis_port=REDIS_PORT,
        state_dir=state_dir,
        cache_dir=cache_dir,
        **values,
    )


@contextmanager
def running_services(state_dir: Path) -> Iterator[tuple[Any, Any]]:
    """Start the bench's services (or reuse ours if healthy) and always remove them afterwards.

    Yields (Endpoints, Settings). BENCH_DATABASE_URL + BENCH_REDIS_URL skip testbed entirely
    (for developing the bench against a server of your own; nothing is started or stopped).
    """
    from bench.context import log

    db_url, redis_url = os.environ.get("BENCH_DATABASE_URL"), os.environ.get("BENCH_REDIS_URL")
    if db_url and redis_url:
        yield _external(db_url, redis_url), None
        return
    from testbed.services.lifecycle import choose, ensure_up

    settings = bench_settings(state_dir=state_dir)
    log(
        f"starting PostgreSQL on 127.0.0.1:{PG_PORT} and Valkey on 127.0.0.1:{REDIS_PORT} "
        f"(state dir {state_dir})"
    )
    try:
        endpoints, _started = ensure_up(settings)
        yield endpoints, settings
    finally:
        log("stopping the bench's services")
        choose(settings).down()


def _external(db_url: str, redis_url: str) -> Any:
    from types import SimpleNamespace

    import psycopg
    import redis

    with psycopg.connect(db_url) as conn:
        pg_version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    client = redis.Redis.from_url(redis_url)
    info = client.info("server")
    client.close()
    return SimpleNamespace(
        backend="external",
        database_url=db_url,
        redis_url=redis_url,
        pg_version=pg_version.split()[0],
        redis_version=str(info.get("valkey_version", info.get("redis_version"))),
        redis_databases=16,
    )
