"""The one-statement bulk insert without a database: the SQL it compiles to (one parameter however
many rows), the JSON that travels, which defaults the INSERT carries, and the order of the objects
that come back. A fake Session hands back what a server would return. (With a server:
testbed/tests/e2e/test_workers.py's 10,000-row batches.)"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Computed, ForeignKey, Numeric, String, Uuid, func
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from testbed.data import bulk
from tinyapp.models import Member


class Base(DeclarativeBase):
    pass


class Invoice(Base):
    """Every kind of default, a Decimal, a UUID, dates and times, and an attribute whose column
    is named otherwise."""

    __tablename__ = "invoices"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column("invoice_no", String(20))
    total: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    ref: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    issued: Mapped[date | None]
    due_at: Mapped[datetime | None]
    cutoff: Mapped[time | None]
    status: Mapped[str] = mapped_column(default="draft")  # scalar: sent
    token: Mapped[str] = mapped_column(default=lambda: "tok")  # callable: called, sent
    created: Mapped[datetime] = mapped_column(server_default=func.now())  # the server's
    note: Mapped[str | None]  # nullable, no default: left out
    cents: Mapped[int] = mapped_column(Computed("total * 100"))  # generated: never sent


class Line(Base):
    """A primary key that is not an integer, and one named otherwise than its column."""

    __tablename__ = "lines"

    key: Mapped[uuid.UUID] = mapped_column("line_id", Uuid, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"))


class Result:
    def __init__(self, objs: list[Any]) -> None:
        self.objs = objs

    def scalars(self) -> Result:
        return self

    def all(self) -> list[Any]:
        return self.objs


class Session:
    """Records each statement (as PostgreSQL SQL) and its JSON; returns the server's rows."""

    def __init__(self, returned: list[Any] | None = None) -> None:
        self.returned = returned or []
        self.sql: list[str] = []
        self.sent: list[list[dict[str, Any]]] = []

    def execute(self, stmt: Any, params: dict[str, str]) -> Result:
        self.sql.append(str(stmt.compile(dialect=postgresql.dialect())))  # type: ignore[no-untyped-call]
        assert set(params) == {"rows"}
        self.sent.append(json.loads(params["rows"]))
        return Result(self.returned)


def insert(
    model: type[Any], rows: list[dict[str, Any]], returned: list[Any] | None = None
) -> tuple[Session, list[Any]]:
    session = Session(returned)
    objs = bulk.insert_rows(session, model, rows)  # type: ignore[arg-type]
    return session, objs


def test_no_rows_no_statement() -> None:
    session, objs = insert(Member, [])
    assert (objs, session.sql) == ([], [])


def test_all_rows_travel_as_one_jsonb_parameter_of_one_statement() -> None:
    rows = [{"name": f"n{i}", "email": f"e{i}@x", "team_id": 1} for i in range(1000)]
    session, _ = insert(Member, rows)
    (sql,) = session.sql
    assert sql.count("%(") == 1  # one placeholder for 1,000 rows: the text stays tiny
    assert len(sql) < 600
    assert sql.startswith("INSERT INTO members (name, email, team_id, level) SELECT r.name,")
    # SQLAlchemy 2.1's psycopg dialect casts the bind itself (%(rows)s::VARCHAR); 2.0's does not.
    assert re.search(
        r"FROM jsonb_to_recordset\(CAST\(%\(rows\)s(::VARCHAR)? AS JSONB\)\) "
        r"AS r\(name VARCHAR\(100\),",
        sql,
    )
    assert sql.endswith(
        "RETURNING members.id, members.name, members.email, members.level, "
        "members.name_length, members.team_id, members.mentor_id"
    )
    assert session.sent[0][:2] == [
        {"name": "n0", "email": "e0@x", "team_id": 1, "level": 1},
        {"name": "n1", "email": "e1@x", "team_id": 1, "level": 1},
    ]
    assert len(session.sent[0]) == 1000


def test_python_side_defaults_travel_and_server_side_ones_do_not() -> None:
    session, _ = insert(Invoice, [{"number": "A-1", "total": Decimal("1.10")}])
    (sent,) = session.sent[0]
    assert sent == {"invoice_no": "A-1", "total": "1.10", "status": "draft", "token": "tok"}
    head = session.sql[0].split(" SELECT ")[0]
    assert head == "INSERT INTO invoices (invoice_no, total, status, token)"
    for left_out in ("created", "note", "cents", "id"):
        assert left_out not in head


def test_a_given_value_wins_over_the_default() -> None:
    session, _ = insert(Invoice, [{"number": "A-1", "total": 1, "status": "paid"}])
    assert session.sent[0][0]["status"] == "paid"
    head = session.sql[0].split(" SELECT ")[0]
    assert head == "INSERT INTO invoices (invoice_no, total, status, token)"  # status once


def test_an_attribute_named_otherwise_than_its_column_is_sent_by_column_name() -> None:
    rows = [{"total": 2, "number": "B-2"}, {"number": "B-3", "total": 3}]  # any key order
    session, _ = insert(Invoice, rows)
    assert [(r["invoice_no"], r["total"]) for r in session.sent[0]] == [("B-2", 2), ("B-3", 3)]
    assert "r(total INTEGER" not in session.sql[0]
    assert "r(total NUMERIC(12, 2), invoice_no VARCHAR(20)" in session.sql[0]


def test_a_column_name_works_as_a_key_too() -> None:
    session, _ = insert(Invoice, [{"invoice_no": "C-1", "total": 1}])
    assert session.sent[0][0]["invoice_no"] == "C-1"


def test_an_unknown_key_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(KeyError, match="colour"):
        insert(Invoice, [{"number": "A", "total": 1, "colour": "red"}])


@pytest.mark.parametrize(
    ("second", "keys"),
    [
        ({"number": "B", "total": 2, "note": "kept?"}, "['number', 'total', 'note']"),  # one more
        ({"number": "B"}, "['number']"),  # one fewer: NULL, not the default
        ({"number": "B", "note": "x"}, "['number', 'note']"),  # another
    ],
    ids=["more", "fewer", "other"],
)
def test_rows_with_other_keys_than_the_first_are_refused_before_anything_is_sent(
    second: dict[str, Any], keys: str
) -> None:
    """One statement inserts one column list: a row with other keys would lose its values or
    get NULLs silently."""
    rows = [{"number": "A", "total": 1}, {"total": 3, "number": "C"}, second]
    session = Session()
    with pytest.raises(ValueError, match=r"^bulk insert of Invoice: rows\[2\]") as refused:
        bulk.insert_rows(session, Invoice, rows)  # type: ignore[arg-type]
    assert str(refused.value) == (
        f"bulk insert of Invoice: rows[2] has the keys {keys}, rows[0] has ['number', "
        "'total']: give every row the same keys (one statement inserts one column list) or "
        "insert the rows that differ in a batch of their own"
    )
    assert session.sql == []


def test_a_key_only_a_later_row_has_is_refused_not_dropped() -> None:
    """Keys named as their columns travel as given: a later row's mentor_id would be left out of
    the column list and its value lost."""
    rows = [{"name": "a", "email": "a@x", "team_id": 1}] * 2
    rows.append({"name": "c", "email": "c@x", "team_id": 1, "mentor_id": 5})
    session = Session()
    with pytest.raises(ValueError, match=r"rows\[2\] has the keys \['name', 'email', 'team_id', "):
        bulk.insert_rows(session, Member, rows)  # type: ignore[arg-type]
    assert session.sent == []


def test_values_json_cannot_carry_are_sent_as_postgresql_parses_them() -> None:
    ref = uuid.UUID("12345678-1234-5678-1234-567812345678")
    row = {
        "number": "D-1",
        "total": Decimal("12345678901.99"),  # never through float: exact
        "ref": ref,
        "issued": date(2026, 12, 2),
        "due_at": datetime(2026, 12, 2, 4, 15, 30, 123456, tzinfo=UTC),
        "cutoff": time(23, 59, 59),
    }
    session, _ = insert(Invoice, [row])
    sent = session.sent[0][0]
    assert sent["total"] == "12345678901.99"
    assert sent["ref"] == "12345678-1234-5678-1234-567812345678"
    assert (sent["issued"], sent["due_at"], sent["cutoff"]) == (
        "2026-12-02",
        "2026-12-02T04:15:30.123456+00:00",
        "23:59:59",
    )


@pytest.mark.parametrize("value", [b"bytes", {1, 2}, object()], ids=["bytes", "set", "object"])
def test_a_value_that_cannot_be_sent_is_named(value: object) -> None:
    with pytest.raises(TypeError, match=f"cannot send {type(value).__name__} in a bulk insert"):
        insert(Invoice, [{"number": "E-1", "total": 1, "note": value}])


# -- the objects that come back -------------------------------------------------------------------
def test_objects_come_back_in_the_order_of_the_rows() -> None:
    """The server returns rows in any order; serial ids follow the order they were sent in."""
    returned = [Invoice(id=i, number=f"n{i}") for i in (12, 10, 11)]
    _, objs = insert(Invoice, [{"number": "n", "total": 1}] * 3, returned)
    assert [o.id for o in objs] == [10, 11, 12]


def test_given_ids_keep_the_servers_order() -> None:
    returned = [Invoice(id=i) for i in (5, 3, 9)]
    _, objs = insert(Invoice, [{"id": i, "number": "n", "total": 1} for i in (5, 3, 9)], returned)
    assert [o.id for o in objs] == [5, 3, 9]


def test_keys_that_are_not_integers_keep_the_servers_order() -> None:
    keys = [uuid.UUID(int=n) for n in (3, 1, 2)]
    returned = [Line(key=k, invoice_id=1) for k in keys]
    _, objs = insert(Line, [{"invoice_id": 1}] * 3, returned)
    assert [o.key for o in objs] == keys


def test_given_keys_named_otherwise_than_their_column_keep_the_servers_order() -> None:
    returned = [Line(key=uuid.UUID(int=n), invoice_id=1) for n in (2, 1)]
    session, objs = insert(Line, [{"key": o.key, "invoice_id": 1} for o in returned], returned)
    assert session.sent[0][0] == {"line_id": str(uuid.UUID(int=2)), "invoice_id": 1}
    assert objs == returned
