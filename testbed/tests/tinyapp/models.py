"""Two tables with what factories must handle: a required foreign key, an optional one, a
NOT NULL column with a default, a unique column (emails unique in any letter case, as real
apps keep them) and a generated (Computed) column."""

from __future__ import annotations

from sqlalchemy import Computed, ForeignKey, Index, Integer, MetaData, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    """The tiny app's models."""

    metadata = MetaData()


class Team(Base):
    """A team: a name and an optional parent team."""

    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"))
    parent: Mapped[Team | None] = relationship(remote_side=[id])


class Member(Base):
    """A member of exactly one team, with a mentor (another member) when given."""

    __tablename__ = "members"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(200), unique=True)
    level: Mapped[int] = mapped_column(Integer, default=1)
    # persisted=True: STORED on every PostgreSQL (SQLAlchemy 2.1 warns when it is left implicit).
    name_length: Mapped[int] = mapped_column(Computed("length(name)", persisted=True))
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    team: Mapped[Team] = relationship()
    mentor_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    mentor: Mapped[Member | None] = relationship(remote_side=[id])


Index("members_lower_email_key", func.lower(Member.email), unique=True)


def create_tables(engine: object) -> None:
    """e2e_schema_setup hook: create the tiny app's tables."""
    Base.metadata.create_all(engine)  # type: ignore[arg-type]
