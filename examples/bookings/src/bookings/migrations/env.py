"""Alembic environment: the caller's connection, else an engine from BOOKINGS_DATABASE_URL."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

connection = context.config.attributes.get("connection")
if connection is None:
    url = os.environ["BOOKINGS_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
    with create_engine(url).begin() as connection:
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
