"""The suite's own fixture names, now served by testbed: that is the whole adoption.

Before testbed, db_engine was create_engine(<a dev database>) and db_session a sessionmaker()
Session whose rows the next test had to delete. Now both come from testbed: the worker's schema,
and a Session that is rolled back after each test (or really commits, for @pytest.mark.committed).
"""

from __future__ import annotations

import pytest
import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from inventory.service import Inventory


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """psycopg's async driver runs on asyncio."""
    return "asyncio"


@pytest.fixture(scope="session")
def db_engine(e2e_engine: Engine) -> Engine:
    """The suite's engine: testbed's, on this worker's schema."""
    return e2e_engine


@pytest.fixture
def db_session(e2e_session: Session) -> Session:
    """The suite's Session: testbed's (options from e2e_session_options in pyproject.toml)."""
    return e2e_session


@pytest.fixture
def inventory(db_session: Session, e2e_redis: redis.Redis[str], e2e_redis_prefix: str) -> Inventory:
    """The app's service over the test's Session and the worker's Redis namespace."""
    return Inventory(db_session, e2e_redis, prefix=e2e_redis_prefix)
