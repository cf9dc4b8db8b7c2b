"""The service: its own engine and Redis client, built from the environment."""

from __future__ import annotations

import os

import redis
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from ledger.models import Account, Transfer


class Ledger:
    """Moves money between accounts and caches balances."""

    def __init__(self, database_url: str | None = None, redis_url: str | None = None) -> None:
        url = database_url or os.environ["DATABASE_URL"]
        self.engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        self.cache = redis.Redis.from_url(redis_url or os.environ["REDIS_URL"])

    def close(self) -> None:
        self.engine.dispose()
        self.cache.close()

    def transfer(self, source: int, target: int, cents: int) -> int:
        """Move cents from source to target in one committed transaction; the transfer id."""
        with Session(self.engine) as session, session.begin():
            accounts = {
                a.id: a
                for a in session.scalars(
                    select(Account).where(Account.id.in_([source, target])).with_for_update()
                )
            }
            if accounts[source].balance_cents < cents:
                raise ValueError("insufficient funds")
            accounts[source].balance_cents -= cents
            accounts[target].balance_cents += cents
            transfer = Transfer(source_id=source, target_id=target, amount_cents=cents)
            session.add(transfer)
            session.flush()
            self.cache.delete(f"balance:{source}", f"balance:{target}")
            return transfer.id

    def balance(self, account: int) -> int:
        """The balance, from the cache when it has it."""
        cached = self.cache.get(f"balance:{account}")
        if cached is not None:
            return int(cached)
        with Session(self.engine) as session:
            cents = session.get_one(Account, account).balance_cents
        self.cache.set(f"balance:{account}", cents, ex=60)
        return cents
