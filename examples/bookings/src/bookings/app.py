"""The app factory: engine and Redis client from the environment, as twelve-factor apps do."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

BOOKINGS_PER_GUEST_PER_MINUTE = 3


class AlreadyBooked(Exception):
    """The room is taken that night."""


class TooManyBookings(Exception):
    """A guest booked too often in one minute."""


@dataclass
class App:
    """What a request handler would use: a sessionmaker and a Redis client."""

    engine: Engine
    sessions: sessionmaker[Session]
    redis: redis.Redis[str]

    def rooms(self) -> list[str]:
        """Room names, from the seed data of the migrations."""
        with self.sessions() as session:
            return list(session.execute(text("SELECT name FROM rooms ORDER BY name")).scalars())

    def book(self, *, room: str, guest: str, night: date) -> int:
        """Book a room for one night; returns the booking id (committed)."""
        attempts = self.redis.incr(f"rate:{guest}")
        if attempts == 1:
            self.redis.expire(f"rate:{guest}", 60)
        if attempts > BOOKINGS_PER_GUEST_PER_MINUTE:
            raise TooManyBookings(f"{guest}: more than {BOOKINGS_PER_GUEST_PER_MINUTE} a minute")
        with self.sessions() as session:
            try:
                booking_id = session.execute(
                    text(
                        "INSERT INTO bookings (room_id, guest, night) "
                        "SELECT id, :guest, :night FROM rooms WHERE name = :room RETURNING id"
                    ),
                    {"room": room, "guest": guest, "night": night},
                ).scalar_one()
                session.commit()
            except IntegrityError:
                raise AlreadyBooked(f"{room} is booked on {night}") from None
        return int(booking_id)

    def close(self) -> None:
        """Release connections."""
        self.engine.dispose()
        self.redis.close()


def create_app(env: Mapping[str, str] = os.environ) -> App:
    """Build the app from BOOKINGS_DATABASE_URL and BOOKINGS_REDIS_URL."""
    url = env["BOOKINGS_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url)
    client: redis.Redis[str] = redis.Redis.from_url(
        env["BOOKINGS_REDIS_URL"], decode_responses=True
    )
    return App(engine, sessionmaker(engine), client)
