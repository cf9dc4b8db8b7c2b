"""Tables a test creates through the engine (mixin tests) land in the worker's schema."""

from __future__ import annotations

from sqlalchemy import Engine, MetaData, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from testbed.isolation.workers import Worker


class Scratch(DeclarativeBase):
    """A base of its own: the app's MetaData does not know these tables."""

    metadata = MetaData()


class TimestampedThing(Scratch):
    """A model a mixin test would declare just for itself."""

    __tablename__ = "timestamped_things"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str]


def test_create_all_lands_in_the_worker_schema(db_engine: Engine, e2e_worker: Worker) -> None:
    Scratch.metadata.create_all(db_engine)  # committed DDL; the schema drop removes it
    with db_engine.begin() as conn:
        conn.execute(text("INSERT INTO timestamped_things (label) VALUES ('x')"))
        where = (
            conn.execute(
                text("SELECT schemaname FROM pg_tables WHERE tablename = 'timestamped_things'")
            )
            .scalars()
            .all()
        )
    # Only this worker's schema has it: not public, not another worker's schema.
    assert where == [e2e_worker.schema]
    Scratch.metadata.drop_all(db_engine)
