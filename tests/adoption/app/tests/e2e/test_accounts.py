"""Rolled-back tests: factories through the suite's db_session, the service beside them."""

from __future__ import annotations

import pytest
from factories import AccountFactory
from ledger.models import Account
from sqlalchemy import func, select, text


@pytest.mark.parametrize("n", range(4))
def test_factories_use_the_suites_session(db_session, n):
    created = AccountFactory.create_batch(3)
    assert db_session.scalar(select(func.count()).select_from(Account)) == 3
    assert all(account.id for account in created)


def test_the_schema_came_from_the_migrations(db_session):
    codes = db_session.execute(text("SELECT code FROM currencies ORDER BY code")).scalars()
    assert list(codes) == ["EUR", "USD"]
    assert db_session.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0002"


def test_a_rolled_back_overdraft_is_refused(db_session):
    account = AccountFactory(balance_cents=0)
    account.balance_cents = -1
    with pytest.raises(Exception, match="no_overdraft"):
        db_session.flush()


def test_the_network_is_mocked():
    import socket

    with pytest.raises(Exception, match="tried to reach"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)


def test_a_cached_balance_expires(ledger):
    """Long enough for testbed's service checks to run while the network is mocked."""
    import time

    ledger.cache.set("balance:1", 100, px=500)
    time.sleep(2.5)
    assert ledger.cache.get("balance:1") is None
