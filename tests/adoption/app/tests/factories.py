"""factory_boy factories; db_session binds them to the test's Session."""

from __future__ import annotations

import factory
from factory.alchemy import SQLAlchemyModelFactory
from ledger.models import Account
from sqlalchemy.orm import Session


class AccountFactory(SQLAlchemyModelFactory):
    class Meta:
        model = Account
        sqlalchemy_session_persistence = "commit"

    owner = factory.Faker("name")
    currency = "EUR"
    balance_cents = 10_000


ALL: list[type[SQLAlchemyModelFactory]] = [AccountFactory]


def bind(session: Session | None) -> None:
    """Point every factory at the session (None: unbind after the test)."""
    for cls in ALL:
        cls._meta.sqlalchemy_session = session
