"""A payload for two runs on one instance (copied to <tmp>/e2e/test_shared.py).

Every test writes a key in its worker's Valkey database and a row in its schema, sleeps
$REL_SLEEP seconds, and checks both are still there: a run that flushed another run's
database, or stopped the services under it, fails here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session


@pytest.mark.parametrize("n", range(int(os.environ.get("REL_TESTS", "8"))))
def test_shared(n: int, e2e_postgres_db: Session, e2e_redis: object, e2e_redis_prefix: str) -> None:
    key = f"{e2e_redis_prefix}shared:{n}"
    e2e_redis.set(key, "1")  # type: ignore[attr-defined]
    e2e_postgres_db.execute(text("INSERT INTO crm_companies (name) VALUES (:n)"), {"n": key})
    progress = os.environ.get("REL_PROGRESS")
    if progress:
        Path(progress, f"{os.getpid()}-{n}").touch()
    time.sleep(float(os.environ.get("REL_SLEEP", "0.5")))
    wait_for = os.environ.get("REL_WAIT_FOR")  # hold until another run has come and gone
    deadline = time.monotonic() + 200
    while wait_for and not Path(wait_for).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert e2e_redis.exists(key) == 1, "another run flushed this worker's database"  # type: ignore[attr-defined]
    count = text("SELECT count(*) FROM crm_companies WHERE name = :n")
    assert e2e_postgres_db.execute(count, {"n": key}).scalar_one() == 1
