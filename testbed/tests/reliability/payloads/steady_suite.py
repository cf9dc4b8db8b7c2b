"""A steady E2E payload for reliability trials (copied to <tmp>/e2e/test_steady.py).

Every test touches PostgreSQL and Valkey through the harness fixtures, records that it ran in
$REL_PROGRESS, then sleeps $REL_SLEEP seconds, so a trial can kill a service mid-suite.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session


@pytest.mark.parametrize("n", range(int(os.environ.get("REL_TESTS", "30"))))
def test_steady(n: int, e2e_postgres_db: Session, e2e_redis: object, e2e_redis_prefix: str) -> None:
    assert e2e_postgres_db.execute(text("SELECT count(*) FROM crm_contacts")).scalar_one() == 0
    e2e_redis.set(f"{e2e_redis_prefix}steady:{n}", "1")  # type: ignore[attr-defined]
    progress = os.environ.get("REL_PROGRESS")
    if progress:
        Path(progress, f"{os.getpid()}-{n}").touch()
    time.sleep(float(os.environ.get("REL_SLEEP", "0.2")))
