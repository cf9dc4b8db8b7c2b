"""The async rollback session on the real server (testbed.isolation.aio): the worker's schema on
every connection, and the app's commits rolled back at the end like the sync session's. Each
scenario runs in an event loop of its own, as test plugins run each test."""

from __future__ import annotations

import asyncio

from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from testbed.isolation.aio import rollback_async_session
from testbed.isolation.workers import Worker
from tinyapp.models import Team


async def _named(session: AsyncSession, name: str) -> int:
    found = await session.execute(text("SELECT count(*) FROM teams WHERE name = :n"), {"n": name})
    return int(found.scalar_one())


def test_async_commits_are_rolled_back_in_the_worker_schema(
    e2e_async_engine: AsyncEngine, e2e_engine: Engine, e2e_worker: Worker
) -> None:
    name = f"async {e2e_worker.worker_id}"

    async def commit_one() -> None:
        async with rollback_async_session(e2e_async_engine) as session:
            schema = await session.execute(text("SELECT current_schema()"))
            assert schema.scalar_one() == e2e_worker.schema
            session.add(Team(name=name))
            await session.commit()  # releases a savepoint only
            assert await _named(session, name) == 1

    async def look() -> int:
        async with rollback_async_session(e2e_async_engine) as session:
            return await _named(session, name)

    asyncio.run(commit_one())
    assert asyncio.run(look()) == 0  # a new loop, a new connection: nothing was committed
    with e2e_engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT count(*) FROM teams WHERE name = :n"), {"n": name}
            ).scalar_one()
            == 0
        )
