"""Isolation between xdist workers, and identities that never collide across workers (meant for
a run with several workers: `-n 2` or more)."""

from __future__ import annotations

import time

import psycopg
import pytest
import redis
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from testbed.data.context import DataContext
from testbed.isolation import schema
from testbed.isolation.pubsub import EventListener
from testbed.isolation.sessions import with_db
from testbed.isolation.workers import Worker
from testbed.run.controller import RunInfo
from testbed.services.endpoints import Endpoints
from tinyapp import events
from tinyapp.models import Team

BATCH = 10_000


@pytest.mark.committed
@pytest.mark.parametrize("marker", range(4))
def test_workers_never_see_each_others_rows(
    e2e_committed_db: Session,
    e2e_engine: Engine,
    e2e_worker: Worker,
    e2e_run: RunInfo,
    e2e_docker_compose: Endpoints,
    marker: int,
) -> None:
    e2e_committed_db.execute(
        text("INSERT INTO teams (name) VALUES (:n)"), {"n": e2e_worker.worker_id}
    )
    e2e_committed_db.commit()
    # Unqualified names resolve only to this worker's schema, on every new connection too.
    with e2e_engine.connect() as conn:
        assert conn.execute(text("SELECT current_schemas(false)")).scalar_one() == [
            e2e_worker.schema
        ]
        names = conn.execute(text("SELECT DISTINCT name FROM teams")).scalars().all()
    assert names == [e2e_worker.worker_id]
    with psycopg.connect(schema.libpq_url(e2e_docker_compose.database_url)) as raw:
        schemas = schema.listed(raw, e2e_run.run_id)
    assert e2e_worker.schema in schemas
    assert all(s.startswith(f"e2e_{e2e_run.run_id}_") for s in schemas)


@pytest.mark.parametrize("marker", range(4))
def test_workers_never_see_each_others_keys(
    e2e_redis: redis.Redis,
    e2e_redis_prefix: str,
    e2e_worker: Worker,
    e2e_docker_compose: object,
    marker: int,
) -> None:
    key = f"{e2e_redis_prefix}marker:{marker}"
    e2e_redis.set(key, e2e_worker.worker_id)
    # Everything in this worker's database carries this worker's prefix.
    assert all(k.startswith(e2e_redis_prefix) for k in e2e_redis.scan_iter(count=1000))
    # No other worker's database holds this key.
    url = e2e_docker_compose.redis_url  # type: ignore[attr-defined]
    for db in range(1, e2e_worker.count + 1):
        if db == e2e_worker.redis_db:
            continue
        other = redis.Redis.from_url(with_db(url, db))
        try:
            assert other.exists(key) == 0
        finally:
            other.close()


@pytest.mark.parametrize("marker", range(4))
def test_workers_never_see_each_others_events(
    e2e_postgres_db: Session,
    e2e_redis: redis.Redis,
    e2e_events: EventListener,
    e2e_redis_prefix: str,
    e2e_data: DataContext,
    marker: int,
) -> None:
    # While other workers publish their own events, this worker's channel carries only its own.
    events.bind(e2e_postgres_db, e2e_redis, prefix=e2e_redis_prefix)
    team = Team(name=f"Marker {marker}")
    e2e_postgres_db.add(team)
    e2e_postgres_db.flush()
    emails = [e2e_data.email() for _ in range(20)]
    with e2e_events.subscribe(events.CHANNEL) as sub:
        for email in emails:
            events.join(e2e_postgres_db, team_id=team.id, name=f"Marker {marker}", email=email)
        received = sub.drain()
    assert [e["data"]["email"] for e in received] == emails
    assert {e["_channel"] for e in received} == {f"{e2e_redis_prefix}tinyapp.members"}


@pytest.mark.heavy
@pytest.mark.parametrize("batch", range(4))
def test_10k_batch_has_no_collision_across_workers(
    member_factory: object,
    e2e_run_redis: redis.Redis,
    e2e_run: RunInfo,
    e2e_worker: Worker,
    batch: int,
    record_property: object,
) -> None:
    began = time.perf_counter()
    members = member_factory.create_batch(BATCH)  # type: ignore[attr-defined]
    seconds = time.perf_counter() - began
    rate = BATCH / seconds
    record_property("rows_per_second", round(rate))  # type: ignore[operator]
    print(f"{e2e_worker.worker_id}: create_batch({BATCH}) {seconds:.3f}s = {rate:,.0f} rows/s")
    emails = [m.email.lower() for m in members]
    assert len(set(emails)) == BATCH  # and the unique index on lower(email) accepted them
    # One run-wide set for every batch of every worker: SADD counts only new members, so any
    # email another worker (or another batch) already used shows up as a shortfall.
    key = f"e2e:{e2e_run.run_id}:emails"
    with e2e_run_redis.pipeline() as pipe:
        pipe.sadd(key, *emails)
        pipe.expire(key, 3600)
        added, _ = pipe.execute()
    assert added == BATCH, f"{BATCH - added} email(s) collided with another worker's batch"
