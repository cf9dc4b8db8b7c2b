"""testbed's isolation promises for one worker, on the real services: the worker's schema, per-test
rollback that survives the app's commits, and committed mode's truncation."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from testbed.isolation.sessions import WorkerDatabase
from testbed.isolation.workers import Worker
from tinyapp.models import Team


def _count(session: Session, table: str = "teams") -> int:
    return int(session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_session_is_in_the_worker_schema(e2e_postgres_db: Session, e2e_worker: Worker) -> None:
    schema = e2e_postgres_db.execute(text("SELECT current_schema()")).scalar_one()
    assert schema == e2e_worker.schema
    assert len(schema.encode()) <= 63


@pytest.mark.parametrize("attempt", [1, 2])
def test_app_commits_are_rolled_back(e2e_postgres_db: Session, attempt: int) -> None:
    # Both runs start empty, whatever ran before: the commit only released a SAVEPOINT.
    assert _count(e2e_postgres_db) == 0
    e2e_postgres_db.add(Team(name=f"Rolled back {attempt}"))
    e2e_postgres_db.commit()
    assert _count(e2e_postgres_db) == 1


@pytest.mark.committed
@pytest.mark.parametrize("attempt", [1, 2])
def test_committed_rows_are_truncated_after(
    e2e_committed_db: Session, e2e_engine: Engine, attempt: int
) -> None:
    assert _count(e2e_committed_db) == 0
    e2e_committed_db.add(Team(name="Committed"))
    e2e_committed_db.commit()
    # A real commit: another connection sees it.
    with e2e_engine.connect() as other:
        assert other.execute(text("SELECT count(*) FROM teams")).scalar_one() == 1


@pytest.mark.committed
def test_truncate_restarts_identities(
    e2e_committed_db: Session, e2e_database: WorkerDatabase
) -> None:
    e2e_committed_db.add(Team(name="First"))
    e2e_committed_db.commit()
    e2e_database.truncate()
    team = Team(name="Again")
    e2e_committed_db.add(team)
    e2e_committed_db.commit()
    assert team.id == 1


def test_a_pooled_connection_the_server_ended_is_replaced_at_checkout(e2e_engine: Engine) -> None:
    # A restart or pg_terminate_backend ends pooled connections; the next checkout must hand out
    # a working one (the socket check in make_engine), never the dead one.
    with e2e_engine.connect() as killer:
        with e2e_engine.connect() as doomed:
            doomed_pid = doomed.execute(text("SELECT pg_backend_pid()")).scalar_one()
            doomed.commit()  # back to the pool idle, as a finished test leaves it
        # With a timeout, pg_terminate_backend returns once the backend has exited.
        ended = killer.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": doomed_pid})
        assert ended.scalar_one() is True
        killer.commit()
    with e2e_engine.connect() as first, e2e_engine.connect() as second:
        pids = {c.execute(text("SELECT pg_backend_pid()")).scalar_one() for c in (first, second)}
    assert doomed_pid not in pids
    assert len(pids) == 2
