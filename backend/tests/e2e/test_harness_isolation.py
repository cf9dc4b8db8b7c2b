"""The harness's isolation promises, tested against the real services."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from opsdesk.domains.crm.models import Contact
from testbed.isolation.sessions import WorkerDatabase
from testbed.isolation.workers import Worker


def _count(session: Session, table: str = "crm_contacts") -> int:
    return int(session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_session_is_in_the_worker_schema(e2e_postgres_db: Session, e2e_worker: Worker) -> None:
    schema = e2e_postgres_db.execute(text("SELECT current_schema()")).scalar_one()
    assert schema == e2e_worker.schema
    assert len(schema.encode()) <= 63


@pytest.mark.parametrize("attempt", [1, 2])
def test_app_commits_are_rolled_back(e2e_postgres_db: Session, attempt: int) -> None:
    # Both runs start empty, whatever ran before: the commit only released a SAVEPOINT.
    assert _count(e2e_postgres_db) == 0
    e2e_postgres_db.add(Contact(email=f"rolled{attempt}@example.test", name="Rolled Back"))
    e2e_postgres_db.commit()
    assert _count(e2e_postgres_db) == 1


@pytest.mark.committed
@pytest.mark.parametrize("attempt", [1, 2])
def test_committed_rows_are_truncated_after(
    e2e_committed_db: Session, e2e_engine: object, attempt: int
) -> None:
    assert _count(e2e_committed_db) == 0
    e2e_committed_db.add(Contact(email="same@example.test", name="Committed"))
    e2e_committed_db.commit()
    # A real commit: another connection sees it.
    with e2e_engine.connect() as other:  # type: ignore[attr-defined]
        assert other.execute(text("SELECT count(*) FROM crm_contacts")).scalar_one() == 1


@pytest.mark.committed
def test_truncate_restarts_identities(
    e2e_committed_db: Session, e2e_database: WorkerDatabase
) -> None:
    e2e_committed_db.add(Contact(email="first@example.test", name="First"))
    e2e_committed_db.commit()
    e2e_database.truncate()
    contact = Contact(email="again@example.test", name="Again")
    e2e_committed_db.add(contact)
    e2e_committed_db.commit()
    assert contact.id == 1
