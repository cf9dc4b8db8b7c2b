"""bookings' fixtures. The app builds everything from the environment; testbed set it already.

testbed exports BOOKINGS_DATABASE_URL (the worker's schema selected by
options=-csearch_path=...) and BOOKINGS_REDIS_URL (the worker's own database) before any
conftest is imported, so even code reading them at import time lands in the worker's namespace.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from bookings.app import App, create_app
from testbed.isolation.sessions import WorkerDatabase

URL_AT_IMPORT = os.environ.get("BOOKINGS_DATABASE_URL")


@pytest.fixture(scope="session")
def url_at_import() -> str | None:
    """BOOKINGS_DATABASE_URL as this conftest saw it when it was imported."""
    return URL_AT_IMPORT


@pytest.fixture
def app(e2e_database: WorkerDatabase, e2e_redis: redis.Redis[str]) -> Iterator[App]:
    """The app as production builds it. e2e_database makes sure the schema is migrated first;
    e2e_redis flushes the worker's Redis database after the test.

    The app commits through its own connections, so tests using it are marked
    @pytest.mark.committed: testbed then truncates the worker's tables after each one, keeping
    the rows the migrations seeded (rooms, alembic_version).
    """
    instance = create_app()
    yield instance
    instance.close()
