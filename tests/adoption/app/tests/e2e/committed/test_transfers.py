"""The service commits through its own engine: this directory is committed (pyproject.toml),
so every test starts from empty tables."""

from __future__ import annotations

import pytest
from factories import AccountFactory


@pytest.mark.parametrize("n", range(3))
def test_a_transfer_commits_and_the_cache_follows(ledger, db_session, n):
    assert AccountFactory._meta.model.__table__.name == "accounts"
    source, target = AccountFactory(balance_cents=500), AccountFactory(balance_cents=0)
    assert (source.id, target.id) == (1, 2)  # identities restarted: nothing left from before
    assert ledger.balance(source.id) == 500
    ledger.transfer(source.id, target.id, 200)
    assert (ledger.balance(source.id), ledger.balance(target.id)) == (300, 200)


def test_an_overdraft_is_refused(ledger, db_session):
    source, target = AccountFactory(balance_cents=10), AccountFactory()
    with pytest.raises(ValueError, match="insufficient"):
        ledger.transfer(source.id, target.id, 11)
