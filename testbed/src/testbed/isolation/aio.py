"""Async SQLAlchemy in the worker schema: an AsyncEngine and the savepoint recipe, async."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from testbed.isolation import schema

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession


def make_async_engine(database_url: str, schema_name: str, **kwargs: Any) -> AsyncEngine:
    """An AsyncEngine (psycopg 3, async) whose connections use the worker schema.

    NullPool by default: an async connection belongs to the event loop that opened it, and
    test plugins may run each test in its own loop; a pooled connection would cross loops.
    """
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    connect_args = dict(kwargs.pop("connect_args", {}))
    options = connect_args.get("options", "")
    connect_args["options"] = f"{options} {schema.search_path_option(schema_name)}".strip()
    kwargs.setdefault("poolclass", NullPool)
    return create_async_engine(
        schema.sqlalchemy_url(database_url), connect_args=connect_args, **kwargs
    )


@asynccontextmanager
async def rollback_async_session(
    engine: AsyncEngine, **session_kwargs: Any
) -> AsyncIterator[AsyncSession]:
    """An AsyncSession joined to an outer transaction that is rolled back at the end.

    The sync recipe in async form: `AsyncSession(bind=conn,
    join_transaction_mode="create_savepoint")`; code under test may `await session.commit()`.
    """
    from sqlalchemy.ext.asyncio import AsyncSession

    async with engine.connect() as conn:
        trans = await conn.begin()
        session = AsyncSession(
            bind=conn, join_transaction_mode="create_savepoint", **session_kwargs
        )
        try:
            yield session
        finally:
            await session.close()
            if trans.is_active:
                await trans.rollback()
