"""The one-statement bulk insert on the real server (testbed.data.bulk): values arrive exactly,
defaults apply, attributes named otherwise than their columns land in those columns, and the
objects come back in the order of the rows. The table lives in the test's rolled-back
transaction."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import MetaData, Numeric, String, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from testbed.data.bulk import insert_rows


class Base(DeclarativeBase):
    metadata = MetaData()


class Entry(Base):
    __tablename__ = "bulk_entries"

    ident: Mapped[int] = mapped_column("id", primary_key=True)
    label: Mapped[str] = mapped_column("label_text", String(50))
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    status: Mapped[str] = mapped_column(default="new")


def test_rows_land_in_their_columns_in_order(e2e_postgres_db: Session) -> None:
    Base.metadata.create_all(e2e_postgres_db.connection())
    rows = [{"label": f"entry {i}", "amount": Decimal("123456789012.01") + i} for i in range(300)]
    entries = insert_rows(e2e_postgres_db, Entry, rows)
    assert [e.label for e in entries] == [r["label"] for r in rows]
    assert [e.ident for e in entries] == sorted(e.ident for e in entries)
    stored = e2e_postgres_db.execute(
        text("SELECT label_text, amount, status FROM bulk_entries ORDER BY id")
    ).all()
    assert [tuple(r) for r in stored[:2]] == [
        ("entry 0", Decimal("123456789012.01"), "new"),
        ("entry 1", Decimal("123456789013.01"), "new"),
    ]
    assert len(stored) == 300
