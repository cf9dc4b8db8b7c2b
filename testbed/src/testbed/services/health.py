"""Readiness gates: a real SELECT 1 over TCP and a real PING, bounded in time."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from testbed.errors import HealthTimeout
from testbed.guard import redact
from testbed.report import command

_POLL = 0.02  # seconds between attempts: Valkey answers in ~16 ms, PostgreSQL in ~0.2 s


def log_tail(path: Path | None, lines: int = 20) -> str:
    """The last lines of a server log, or a note why there is none."""
    if path is None:
        return "(no server log for this backend)"
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail) if tail else f"(empty log {path})"


def _timeout(
    what: str, url: str, timeout: float, last: BaseException | None, log: Path | None, hint: str
) -> HealthTimeout:
    reason = "no attempt finished"
    if last is not None:
        reason = f"{type(last).__name__}: {redact(str(last)).strip()}"
    return HealthTimeout(
        f"{what} at {redact(url)} did not answer within {timeout:g} s (last error: {reason}).\n"
        f"  server log tail ({log or 'n/a'}):\n{log_tail(log)}\n"
        f"  try: {hint}"
    )


def _poll(
    attempt: Callable[[float], str],
    what: str,
    url: str,
    timeout: float,
    log: Path | None,
    alive: Callable[[], bool] | None,
    hint: str,
) -> str:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            return attempt(max(1.0, min(remaining, 5.0)))
        except Exception as exc:  # any failure means "not ready yet" until the deadline
            last = exc
        if alive is not None and not alive():
            raise HealthTimeout(
                f"{what} exited before it answered at {redact(url)}.\n"
                f"  server log tail ({log or 'n/a'}):\n{log_tail(log)}\n  try: {hint}"
            )
        if time.monotonic() + _POLL >= deadline:
            raise _timeout(what, url, timeout, last, log, hint)
        time.sleep(_POLL)


def _pg_attempt(url: str) -> Callable[[float], str]:
    def attempt(budget: float) -> str:
        import psycopg

        with psycopg.connect(url, connect_timeout=max(1, round(budget)), autocommit=True) as conn:
            row = conn.execute("SELECT 1, current_setting('server_version')").fetchone()
        if row is None or row[0] != 1:
            raise RuntimeError(f"SELECT 1 returned {row!r}")
        return str(row[1]).split(" ", 1)[0]

    return attempt


def _redis_attempt(url: str) -> Callable[[float], str]:
    def attempt(budget: float) -> str:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=budget, socket_connect_timeout=budget)
        try:
            if client.ping() is not True:
                raise RuntimeError("PING did not answer PONG")
            info = client.info("server")
        finally:
            client.close()
        # Valkey reports redis_version 7.2.4 for client compatibility; valkey_version is real.
        return str(info.get("valkey_version") or info.get("redis_version") or "unknown")

    return attempt


def _hint() -> str:
    return (
        f"{command('status')}, then {command('down')} and {command('up')} once no run uses "
        "them; raise E2E_WAIT_TIMEOUT on a slow machine"
    )


def wait_postgres(
    url: str, timeout: float, *, log: Path | None = None, alive: Callable[[], bool] | None = None
) -> str:
    """Wait until `SELECT 1` succeeds over TCP; return the server version (e.g. "16.15")."""
    return _poll(_pg_attempt(url), "PostgreSQL", url, timeout, log, alive, _hint())


def wait_redis(
    url: str, timeout: float, *, log: Path | None = None, alive: Callable[[], bool] | None = None
) -> str:
    """Wait until PING answers; return the server version (e.g. "8.1.8")."""
    return _poll(_redis_attempt(url), "Valkey", url, timeout, log, alive, _hint())


def redis_databases(url: str) -> int:
    """How many logical databases the server offers (16 when CONFIG is not allowed)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        value = client.config_get("databases").get("databases")
        return int(value) if value else 16
    except redis.RedisError:
        return 16  # managed services often disable CONFIG; 16 is the server default
    finally:
        client.close()
