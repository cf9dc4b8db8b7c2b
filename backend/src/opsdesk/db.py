"""Database plumbing: declarative Base, schema-aware engines and sessions, schema lifecycle.

A worker schema is selected with ``search_path`` at connect time, and tables carry no schema in
their metadata, so ORM queries, raw SQL and ``create_all`` all land in the selected schema.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import CheckConstraint, Engine, MetaData, create_engine, text
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from opsdesk.errors import InvalidArgument

# Stable constraint names, so error messages and migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Unquoted-identifier shape, at most 63 bytes (PostgreSQL's NAMEDATALEN - 1).
_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class Base(DeclarativeBase):
    """Declarative base of every opsdesk model; tables carry no schema (search_path picks it)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def enum_check(column: str, values: Iterable[str], *, name: str | None = None) -> CheckConstraint:
    """Return a CHECK constraint limiting a string column to ``values`` (enums stored as text)."""
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return CheckConstraint(f"{column} IN ({quoted})", name=name or f"{column}_valid")


def validate_schema(schema: str) -> str:
    """Return ``schema`` if it is a safe identifier, else raise InvalidArgument saying why."""
    if not _SCHEMA_RE.fullmatch(schema):
        raise InvalidArgument(
            f"invalid schema name {schema!r}: use letters, digits and underscores, "
            "starting with a letter or underscore, at most 63 characters"
        )
    return schema


def quote_schema(schema: str) -> str:
    """Return the validated schema name as a double-quoted SQL identifier."""
    return '"' + validate_schema(schema) + '"'


def normalize_url(url: str) -> str:
    """Map plain libpq URLs (postgresql://, postgres://) to SQLAlchemy's psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, *, schema: str | None = None, **kwargs: Any) -> Engine:
    """Create an engine whose connections use ``search_path=<schema>`` from connect time on."""
    if schema is not None:
        connect_args = dict(kwargs.pop("connect_args", {}))
        options = connect_args.get("options", "")
        # libpq's options string: the identifier is validated, so no spaces need escaping.
        connect_args["options"] = f"{options} -c search_path={quote_schema(schema)}".strip()
        kwargs["connect_args"] = connect_args
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(normalize_url(url), **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Return a sessionmaker bound to ``engine``; objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def _import_models() -> None:
    # Importing the model modules registers every table on Base.metadata.
    from opsdesk import idempotency as _idempotency  # noqa: F401
    from opsdesk.domains.canvas import models as _canvas  # noqa: F401
    from opsdesk.domains.crm import models as _crm  # noqa: F401
    from opsdesk.domains.finance import models as _finance  # noqa: F401
    from opsdesk.domains.knowledge import models as _knowledge  # noqa: F401
    from opsdesk.domains.tasks import models as _tasks  # noqa: F401
    from opsdesk.domains.tickets import models as _tickets  # noqa: F401


def table_names() -> list[str]:
    """Return every opsdesk table name, parents before children (for TRUNCATE ... CASCADE)."""
    _import_models()
    return [table.name for table in Base.metadata.sorted_tables]


def create_schema(engine: Engine, schema: str) -> None:
    """Create ``schema`` with every opsdesk table, index and trigger; idempotent, one txn."""
    _import_models()
    quoted = quote_schema(schema)
    names = table_names()
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quoted}"))
        # SET LOCAL scopes the search_path to this transaction, whatever the engine's default.
        conn.execute(text(f"SET LOCAL search_path TO {quoted}"))
        existing = conn.execute(
            text("SELECT count(*) FROM pg_tables WHERE schemaname = :s AND tablename = ANY(:t)"),
            {"s": schema, "t": names},
        ).scalar_one()
        if existing == len(names):
            return
        # All or nothing is the fast path; a partial schema (crashed run) gets per-table checks.
        Base.metadata.create_all(conn, checkfirst=existing > 0)


def create_tables(engine: Engine) -> None:
    """Create missing opsdesk tables in the connection's current search_path (no schema given)."""
    _import_models()
    with engine.begin() as conn:
        Base.metadata.create_all(conn, checkfirst=True)


def drop_schema(engine: Engine, schema: str) -> None:
    """Drop ``schema`` and everything in it; a missing schema is not an error."""
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {quote_schema(schema)} CASCADE"))
