"""bookings against real PostgreSQL and Valkey, with the app's own engine and Redis client."""

from __future__ import annotations

import os
from datetime import date

import pytest
from sqlalchemy import text

from bookings.app import AlreadyBooked, App, TooManyBookings
from testbed.isolation.workers import Worker

pytestmark = pytest.mark.committed
NIGHT = date(2025, 3, 14)


def test_the_apps_own_engine_lands_in_the_worker_schema(
    app: App, e2e_worker: Worker, url_at_import: str | None
) -> None:
    url = os.environ["BOOKINGS_DATABASE_URL"]
    assert url == url_at_import  # set before the conftest was imported
    assert "search_path" in url
    with app.engine.connect() as conn:
        assert conn.execute(text("SELECT current_schema()")).scalar_one() == e2e_worker.schema


def test_migrations_ran_in_the_worker_schema(app: App, e2e_worker: Worker) -> None:
    with app.engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        homes = conn.execute(
            text(
                "SELECT DISTINCT schemaname FROM pg_tables WHERE schemaname IN "
                "(current_schema(), 'public') AND tablename IN ('rooms', 'bookings', "
                "'alembic_version')"
            )
        ).scalars()
        assert set(homes) == {e2e_worker.schema}  # not public, where no search_path would put them
    assert version == "0002"
    assert app.rooms() == ["Blue", "Green", "Red"]  # the seed migration's rows


def test_a_room_is_booked_once_a_night(app: App) -> None:
    app.book(room="Blue", guest="ada", night=NIGHT)
    with pytest.raises(AlreadyBooked):
        app.book(room="Blue", guest="grace", night=NIGHT)


@pytest.mark.xdist_group("cleanup")
@pytest.mark.parametrize("attempt", [1, 2])
def test_committed_bookings_are_gone_before_the_next_test(app: App, attempt: int) -> None:
    # Same room, same night, on one worker (one xdist group): only the truncation between the
    # two tests lets the second one book it; the seeded rooms survive it.
    with app.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM bookings")).scalar_one() == 0
    assert app.rooms() == ["Blue", "Green", "Red"]
    app.book(room="Green", guest=f"guest{attempt}", night=NIGHT)


def test_the_rate_limit_counts_in_the_workers_redis_database(app: App) -> None:
    for day in range(1, 4):
        app.book(room="Red", guest="eve", night=date(2025, 4, day))
    with pytest.raises(TooManyBookings):
        app.book(room="Red", guest="eve", night=date(2025, 4, 9))
    assert app.redis.get("rate:eve") == "4"  # in this worker's own database: no prefix needed
