"""opsdesk.db without a server: URL mapping, schema validation, DDL the models compile to."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from opsdesk import db
from opsdesk.errors import InvalidArgument

EXPECTED_TABLES = {
    "crm_companies", "crm_contacts", "crm_deals", "tasks", "task_comments", "tickets",
    "ticket_events", "knowledge_docs", "canvas_docs", "finance_accounts",
    "ledger_transactions", "ledger_lines", "invoices", "invoice_lines", "idempotency_keys",
}  # fmt: skip


def ddl(table_name: str) -> str:
    """Return the PostgreSQL DDL of a table and its indexes."""
    db.table_names()  # registers every model
    table = db.Base.metadata.tables[table_name]
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    parts = [str(CreateTable(table).compile(dialect=dialect))]
    parts += [str(CreateIndex(ix).compile(dialect=dialect)) for ix in table.indexes]
    return "\n".join(parts)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h:5433/d", "postgresql+psycopg://u@h:5433/d"),
        ("postgres://u@h/d", "postgresql+psycopg://u@h/d"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
        ("sqlite://", "sqlite://"),
    ],
)
def test_normalize_url_maps_libpq_urls_to_psycopg(url: str, expected: str) -> None:
    assert db.normalize_url(url) == expected


class _Captured(Exception):
    """Stops a connection attempt once its parameters are known."""


def connect_params(engine: Engine) -> dict[str, Any]:
    """Return the parameters the engine would open a connection with (without connecting)."""
    captured: dict[str, Any] = {}

    @event.listens_for(engine, "do_connect")
    def capture(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        captured.update(cparams)
        raise _Captured

    with pytest.raises(_Captured):
        engine.connect()
    return captured


def test_make_engine_sets_search_path_at_connect_time() -> None:
    engine = db.make_engine("postgresql://u@127.0.0.1:1/d", schema="e2e_run_gw0")
    assert connect_params(engine)["options"] == '-c search_path="e2e_run_gw0"'
    assert engine.url.drivername == "postgresql+psycopg"


def test_make_engine_keeps_caller_options() -> None:
    engine = db.make_engine(
        "postgresql://u@h/d", schema="s1", connect_args={"options": "-c statement_timeout=5s"}
    )
    assert connect_params(engine)["options"] == '-c statement_timeout=5s -c search_path="s1"'


def test_make_engine_without_schema_leaves_search_path_alone() -> None:
    engine = db.make_engine("postgresql://u@h/d")
    assert "options" not in connect_params(engine)


@pytest.mark.parametrize(
    "schema", ["", "1abc", "a-b", "a b", 'x";drop', "a" * 64, "sch\u00e9ma", "a.b"]
)
def test_bad_schema_names_are_refused(schema: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid schema name"):
        db.make_engine("postgresql://u@h/d", schema=schema)


def test_schema_name_of_63_bytes_is_accepted() -> None:
    assert db.quote_schema("e" * 63) == '"' + "e" * 63 + '"'


def test_table_names_lists_every_table_parents_first() -> None:
    names = db.table_names()
    assert set(names) == EXPECTED_TABLES
    assert names.index("invoices") < names.index("invoice_lines")
    assert names.index("ledger_transactions") < names.index("ledger_lines")


def test_tables_carry_no_schema() -> None:
    db.table_names()
    assert all(t.schema is None for t in db.Base.metadata.tables.values())


def test_contact_email_unique_ignoring_case() -> None:
    sql = ddl("crm_contacts")
    assert "CREATE UNIQUE INDEX uq_crm_contacts_email_lower ON crm_contacts (lower(email))" in sql


def test_knowledge_search_vector_is_generated_with_gin_index() -> None:
    sql = ddl("knowledge_docs")
    assert "GENERATED ALWAYS AS (setweight(to_tsvector('english'::regconfig" in sql
    assert "STORED" in sql
    assert "USING gin (search_vector)" in sql


def test_money_columns_are_numeric_not_float() -> None:
    for table, column in [
        ("crm_deals", "amount"),
        ("ledger_lines", "amount"),
        ("invoice_lines", "unit_price"),
        ("invoice_lines", "line_total"),
    ]:
        assert f"{column} NUMERIC(18, 2)" in ddl(table)


def test_enums_are_strings_with_check_constraints() -> None:
    sql = ddl("tickets")
    assert "CHECK (status IN ('open', 'pending', 'resolved', 'closed'))" in sql
    assert "CHECK (priority IN ('low', 'normal', 'high', 'urgent'))" in ddl("tasks")
    assert "CHECK (stage IN ('lead', 'qualified', 'proposal', 'won', 'lost'))" in ddl("crm_deals")


def test_canvas_data_is_jsonb_with_version() -> None:
    sql = ddl("canvas_docs")
    assert "data JSONB" in sql
    assert "CHECK (version >= 1)" in sql


def test_invoice_line_total_is_computed_by_postgres() -> None:
    assert "GENERATED ALWAYS AS (round(quantity * unit_price, 2)) STORED" in ddl("invoice_lines")


def test_ledger_balance_trigger_is_deferred() -> None:
    from opsdesk.domains.finance import models

    assert "DEFERRABLE INITIALLY DEFERRED" in models.LEDGER_BALANCE_TRIGGER
    assert "%" not in models.LEDGER_BALANCE_FUNCTION  # the driver would read it as a placeholder
