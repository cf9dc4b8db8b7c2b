"""Refuse anything that is not an E2E target, and keep passwords out of every message."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote, urlsplit

from testbed.errors import ForeignTarget
from testbed.report import command

DEV_PG_PORT = 5432
DEV_REDIS_PORT = 6379
MARKER = "e2e"

_PG_SCHEMES = ("postgres", "postgresql")
_REDIS_SCHEMES = ("redis", "rediss", "valkey", "valkeys", "unix")
# scheme://user:password@  → keep user, hide password (works inside longer text too).
_USERINFO = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)@")
_QUERY_PW = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&\s]*)", re.IGNORECASE)


def redact(url: str) -> str:
    """Return the text with every URL password replaced by '***'."""
    text = _USERINFO.sub(lambda m: f"{m['head']}***@" if m["pw"] else m[0], url)
    return _QUERY_PW.sub(lambda m: f"{m['head']}***", text)


def _refuse(url: str, why: str, fix: str) -> ForeignTarget:
    return ForeignTarget(f"refusing {redact(url)}: {why}. {fix}")


def check_postgres_url(url: str) -> None:
    """Raise ForeignTarget unless the URL names an E2E database (not port 5432, "e2e" names)."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0].lower()
    if scheme not in _PG_SCHEMES:
        raise _refuse(
            url,
            f"not a PostgreSQL URL (scheme {parts.scheme!r})",
            "Use the E2E database's URL, e.g. postgresql://shop_e2e@127.0.0.1:<E2E_PG_PORT>/shop_e2e.",
        )
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    try:
        port = int(query.get("port") or parts.port or DEV_PG_PORT)
    except ValueError:
        raise _refuse(url, "the port is not a number", "Fix the URL.") from None
    if port == DEV_PG_PORT:
        raise _refuse(
            url,
            f"port {DEV_PG_PORT} is the developer's PostgreSQL, not an E2E service",
            f"Use the E2E PostgreSQL (on E2E_PG_PORT; {command('env')} prints its URL); "
            "check E2E_PG_PORT / E2E_DATABASE_URL.",
        )
    dbname = unquote(query.get("dbname") or parts.path.lstrip("/"))
    user = unquote(query.get("user") or parts.username or "")
    for kind, name in (("database", dbname), ("role", user)):
        if MARKER not in name.lower():
            raise _refuse(
                url,
                f"the {kind} name {name!r} does not contain {MARKER!r}, so it is not an "
                "E2E database",
                "Use a database and role whose names contain 'e2e' (testbed's are <name>_e2e).",
            )


def check_redis_url(url: str) -> None:
    """Raise ForeignTarget if the URL is the developer's Redis (port 6379) or not Redis at all."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _REDIS_SCHEMES:
        raise _refuse(
            url,
            f"not a Redis URL (scheme {parts.scheme!r})",
            "Use redis://127.0.0.1:<E2E_REDIS_PORT>/0.",
        )
    if scheme == "unix":
        if MARKER not in parts.path.lower():
            raise _refuse(
                url,
                "a unix socket whose path does not contain 'e2e'",
                "Use the TCP URL of the E2E Valkey (redis://127.0.0.1:<E2E_REDIS_PORT>/0).",
            )
        return
    try:
        port = parts.port or DEV_REDIS_PORT
    except ValueError:
        raise _refuse(url, "the port is not a number", "Fix the URL.") from None
    if port == DEV_REDIS_PORT:
        raise _refuse(
            url,
            f"port {DEV_REDIS_PORT} is the developer's Redis, not an E2E service",
            f"Use the E2E Valkey (on E2E_REDIS_PORT; {command('env')} prints its URL); "
            "check E2E_REDIS_PORT / E2E_REDIS_URL.",
        )
