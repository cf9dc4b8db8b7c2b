"""Finance through MCP: exact money, balanced double entry (service + COMMIT trigger), invoices."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from mcp import ClientSession
from mcp_calls import call, call_error, is_invalid
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from opsdesk.domains.finance import service as finance
from opsdesk.domains.finance.models import Invoice, LedgerLine, LedgerTransaction
from opsdesk.errors import InvalidArgument
from testbed.data.context import DataContext
from testbed.isolation.pubsub import EventListener


async def _accounts(mcp: ClientSession, data: DataContext) -> tuple[int, int]:
    cash = await call(
        mcp, "finance_create_account", code=data.code("C-", 8), name="Cash", type="asset"
    )
    sales = await call(
        mcp, "finance_create_account", code=data.code("S-", 8), name="Sales", type="income"
    )
    return cash["id"], sales["id"]


async def test_accounts_create_get_search(
    mcp_service: ClientSession, e2e_events: EventListener, e2e_data: DataContext
) -> None:
    code = e2e_data.code("ACC-", 10)
    with e2e_events.subscribe("finance") as sub:
        acct = await call(
            mcp_service, "finance_create_account", code=code, name="Bank", type="asset"
        )
        assert sub.next()["data"]["code"] == code
    got = await call(mcp_service, "finance_get_account", account_id=acct["id"])
    assert Decimal(got["balance"]) == Decimal("0.00")
    found = await call(mcp_service, "finance_search_accounts", query=code.lower(), type="asset")
    assert [a["id"] for a in found["results"]] == [acct["id"]]


async def test_account_code_is_unique(mcp_service: ClientSession, account_factory: object) -> None:
    existing = account_factory.create()  # type: ignore[attr-defined]
    message = await call_error(
        mcp_service, "finance_create_account", code=existing.code, name="Dup", type="asset"
    )
    assert "Conflict" in message


async def test_balanced_transaction_moves_balances_exactly(
    mcp_service: ClientSession,
    e2e_session: Session,
    e2e_events: EventListener,
    e2e_data: DataContext,
) -> None:
    cash, sales = await _accounts(mcp_service, e2e_data)
    with e2e_events.subscribe("finance") as sub:
        tx = await call(
            mcp_service,
            "finance_post_transaction",
            memo="Sale",
            lines=[
                {"account_id": cash, "amount": "0.10"},
                {"account_id": cash, "amount": "0.20"},
                {"account_id": sales, "amount": "-0.30"},
            ],
        )
        event = sub.next()
    assert event["type"] == "finance.transaction.posted"
    assert len(event["data"]["lines"]) == 3
    assert Decimal(
        (await call(mcp_service, "finance_get_account", account_id=cash))["balance"]
    ) == Decimal("0.30")  # 0.1 + 0.2 is exactly 0.30 in Numeric, never 0.30000000000000004
    got = await call(mcp_service, "finance_get_transaction", transaction_id=tx["id"])
    assert sum(Decimal(str(line["amount"])) for line in got["lines"]) == 0
    assert e2e_session.scalar(select(func.sum(LedgerLine.amount))) == Decimal("0.00")


@pytest.mark.parametrize(
    "amounts",
    [["10.00", "-9.99"], ["5.00"], [], ["1.00", "0", "-1.00"]],
    ids=["unbalanced", "one-line", "empty", "zero-line"],
)
async def test_unbalanced_entries_are_refused(
    mcp_service: ClientSession,
    e2e_session: Session,
    e2e_events: EventListener,
    e2e_data: DataContext,
    amounts: list[str],
) -> None:
    cash, sales = await _accounts(mcp_service, e2e_data)
    accounts = [cash, sales, sales]
    lines = [{"account_id": accounts[i], "amount": a} for i, a in enumerate(amounts)]
    with e2e_events.subscribe("finance") as sub:
        message = await call_error(mcp_service, "finance_post_transaction", memo="Bad", lines=lines)
        assert sub.drain() == []
    assert "RuleViolation" in message or is_invalid(message)
    assert e2e_session.scalar(select(func.count()).select_from(LedgerTransaction)) == 0


async def test_float_amounts_and_missing_accounts_are_refused(
    mcp_service: ClientSession, e2e_data: DataContext
) -> None:
    cash, sales = await _accounts(mcp_service, e2e_data)
    assert is_invalid(
        await call_error(
            mcp_service,
            "finance_post_transaction",
            memo="Float",
            lines=[
                {"account_id": cash, "amount": "1.001"},
                {"account_id": sales, "amount": "-1.001"},
            ],
        )
    )
    message = await call_error(
        mcp_service,
        "finance_post_transaction",
        memo="Ghost",
        lines=[{"account_id": cash, "amount": "1"}, {"account_id": 999_999, "amount": "-1"}],
    )
    assert "NotFound" in message


@pytest.mark.committed
def test_commit_trigger_refuses_unbalanced_raw_sql(
    e2e_committed_db: Session, ledger_transaction_factory: object
) -> None:
    # The deferred constraint trigger fires at COMMIT only: a real commit is needed.
    tx = ledger_transaction_factory.create(amount=Decimal("25.00"))  # type: ignore[attr-defined]
    line_id = e2e_committed_db.scalar(
        select(LedgerLine.id).where(LedgerLine.transaction_id == tx.id, LedgerLine.amount > 0)
    )
    e2e_committed_db.execute(
        text("UPDATE ledger_lines SET amount = 26 WHERE id = :id"), {"id": line_id}
    )
    with pytest.raises(IntegrityError, match="unbalanced"):
        e2e_committed_db.commit()
    e2e_committed_db.rollback()
    total = e2e_committed_db.scalar(
        select(func.sum(LedgerLine.amount)).where(LedgerLine.transaction_id == tx.id)
    )
    assert total == Decimal("0.00")


async def test_invoice_totals_are_computed_by_postgres(
    mcp_service: ClientSession,
    e2e_session: Session,
    e2e_events: EventListener,
    e2e_data: DataContext,
    crm_contact_factory: object,
) -> None:
    contact = crm_contact_factory.create()  # type: ignore[attr-defined]
    number = e2e_data.code("INV-", 12)
    with e2e_events.subscribe("finance") as sub:
        inv = await call(
            mcp_service,
            "finance_create_invoice",
            number=number,
            customer_name="Initech",
            contact_id=contact.id,
            due_date="2030-01-31",
            lines=[
                {"description": "Consulting", "quantity": "1.5", "unit_price": "99.99"},
                {"description": "Widgets", "quantity": "3", "unit_price": "0.10"},
            ],
        )
        event = sub.next()
    # round(1.5 * 99.99, 2) = 149.99 (149.985 rounds half up), + 0.30
    assert Decimal(str(inv["total"])) == Decimal("150.29")
    assert event["type"] == "finance.invoice.created"
    assert Decimal(event["data"]["total"]) == Decimal("150.29")
    got = await call(mcp_service, "finance_get_invoice", invoice_id=inv["id"])
    assert [Decimal(str(x["line_total"])) for x in got["lines"]] == [
        Decimal("149.99"),
        Decimal("0.30"),
    ]
    assert got["status"] == "draft"


async def test_invoice_rules(
    mcp_service: ClientSession, e2e_data: DataContext, finance_data_factory: object
) -> None:
    line = {"description": "x", "quantity": "1", "unit_price": "1"}
    empty = await call_error(
        mcp_service,
        "finance_create_invoice",
        number=e2e_data.code("I-"),
        customer_name="C",
        lines=[],
    )
    assert "RuleViolation" in empty or is_invalid(empty)
    assert is_invalid(
        await call_error(
            mcp_service,
            "finance_create_invoice",
            number=e2e_data.code("I-"),
            customer_name="C",
            lines=[{**line, "quantity": "0"}],
        )
    )
    assert is_invalid(
        await call_error(
            mcp_service,
            "finance_create_invoice",
            number=e2e_data.code("I-"),
            customer_name="C",
            lines=[{**line, "unit_price": "-1"}],
        )
    )
    existing = finance_data_factory.create()  # type: ignore[attr-defined]
    assert "Conflict" in await call_error(
        mcp_service,
        "finance_create_invoice",
        number=existing.number,
        customer_name="C",
        lines=[line],
    )


async def test_search_invoices_by_customer_and_status(
    mcp_service: ClientSession, finance_data_factory: object
) -> None:
    finance_data_factory.create_batch(4, lines=1)  # type: ignore[attr-defined]
    target = finance_data_factory.create(customer_name="Umbrella Corp", lines=3)  # type: ignore[attr-defined]
    out = await call(mcp_service, "finance_search_invoices", customer="umbrella", status="draft")
    assert [i["id"] for i in out["results"]] == [target.id]
    got = await call(mcp_service, "finance_get_invoice", invoice_id=target.id)
    assert len(got["lines"]) == 3
    assert Decimal(str(got["total"])) == sum(Decimal(str(x["line_total"])) for x in got["lines"])


async def test_invoice_keeps_its_contact_due_date_and_notes(
    mcp_service: ClientSession,
    e2e_session: Session,
    e2e_data: DataContext,
    crm_contact_factory: object,
) -> None:
    contact = crm_contact_factory.create()  # type: ignore[attr-defined]
    notes = e2e_data.sentence()
    inv = await call(
        mcp_service,
        "finance_create_invoice",
        number=e2e_data.code("INV-", 12),
        customer_name="Initech",
        contact_id=contact.id,
        due_date="2030-01-31",
        notes=notes,
        lines=[{"description": "Consulting", "quantity": "1", "unit_price": "10"}],
    )
    assert (inv["contact_id"], inv["due_date"], inv["notes"]) == (contact.id, "2030-01-31", notes)
    got = await call(mcp_service, "finance_get_invoice", invoice_id=inv["id"])
    assert (got["contact_id"], got["due_date"], got["notes"]) == (contact.id, "2030-01-31", notes)
    row = e2e_session.get(Invoice, inv["id"])  # what PostgreSQL holds, not the tool's echo
    assert row is not None
    assert (row.contact_id, row.due_date, row.notes) == (contact.id, date(2030, 1, 31), notes)
    bare = await call(
        mcp_service,
        "finance_create_invoice",
        number=e2e_data.code("INV-", 12),
        customer_name="Initech",
        lines=[{"description": "Consulting", "quantity": "1", "unit_price": "10"}],
    )
    assert (bare["contact_id"], bare["due_date"], bare["notes"]) == (None, None, "")


async def test_amounts_up_to_the_limit_are_kept_exactly_and_beyond_it_refused(
    mcp_service: ClientSession, e2e_session: Session, e2e_data: DataContext
) -> None:
    cash, sales = await _accounts(mcp_service, e2e_data)
    top = finance.MAX_AMOUNT
    assert top == Decimal("9999999999999999.99")  # Numeric(18, 2): the column's own limit
    tx = await call(
        mcp_service,
        "finance_post_transaction",
        memo="Limit",
        lines=[
            {"account_id": cash, "amount": str(top)},
            {"account_id": sales, "amount": f"-{top}"},
        ],
    )
    got = await call(mcp_service, "finance_get_transaction", transaction_id=tx["id"])
    assert sorted(Decimal(str(x["amount"])) for x in got["lines"]) == [-top, top]
    inv = await call(
        mcp_service,
        "finance_create_invoice",
        number=e2e_data.code("INV-", 12),
        customer_name="Initech",
        lines=[{"description": "All of it", "quantity": "1", "unit_price": str(top)}],
    )
    assert Decimal(str(inv["total"])) == top
    # One cent more, either way: the MCP schema refuses it, and so does the service behind it.
    over = top + Decimal("0.01")
    for amount in (over, -over):
        with pytest.raises(InvalidArgument, match="exceeds"):
            finance.money(amount)
        assert is_invalid(
            await call_error(
                mcp_service,
                "finance_post_transaction",
                memo="Over",
                lines=[
                    {"account_id": cash, "amount": str(amount)},
                    {"account_id": sales, "amount": str(-amount)},
                ],
            )
        )
    lines = [finance.LineSpec(cash, over), finance.LineSpec(sales, -over)]
    with pytest.raises(InvalidArgument, match="exceeds"):
        finance.post_transaction(e2e_session, memo="Over", lines=lines)
    spec = finance.InvoiceLineSpec("Too much", Decimal(1), over)
    with pytest.raises(InvalidArgument, match="exceeds"):
        finance.create_invoice(
            e2e_session, number=e2e_data.code("I-"), customer_name="C", lines=[spec]
        )
    assert finance.money(top) == top
    assert finance.money(-top) == -top
