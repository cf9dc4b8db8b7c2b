"""Finance tools: accounts, ledger posting, balances, invoices."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from opsdesk.app import App
from opsdesk.domains.finance import service as finance
from opsdesk.domains.finance.models import (
    Account,
    AccountType,
    Invoice,
    InvoiceStatus,
    LedgerTransaction,
)
from opsdesk.mcp_tools.registry import tool_registrar
from opsdesk.mcp_tools.types import (
    Id,
    IdempotencyKey,
    InvoiceLineIn,
    LedgerLineIn,
    Limit,
    Name,
    Query,
    Reference,
    Text,
    dump,
)

Code = Annotated[str, Field(min_length=1, max_length=20, pattern=r"^[A-Za-z0-9._-]+$")]
InvoiceNumber = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9._/-]+$")]
LedgerLines = Annotated[list[LedgerLineIn], Field(max_length=100)]
InvoiceLines = Annotated[list[InvoiceLineIn], Field(max_length=500)]


def _transaction(s: Any, transaction_id: int) -> dict[str, Any]:
    txn = finance.get_transaction(s, transaction_id=transaction_id)
    return dump(txn, lines=[dump(line) for line in txn.lines])


def _invoice(s: Any, invoice_id: int) -> dict[str, Any]:
    invoice = finance.get_invoice(s, invoice_id=invoice_id)
    return dump(invoice, lines=[dump(line) for line in invoice.lines])


def register(server: MCPServer[Any], app: App) -> None:
    """Add the finance tools to ``server``."""
    tool = tool_registrar(server)

    @tool("Create a ledger account with a unique code.")
    def finance_create_account(
        code: Code, name: Name, type: AccountType, idempotency_key: IdempotencyKey = None
    ) -> dict[str, Any]:
        return app.create(
            model=Account,
            key=idempotency_key,
            arguments={"code": code, "name": name, "type": type},
            make=lambda s: finance.create_account(s, code=code, name=name, type=type).id,
            load=lambda s, i: dump(finance.get_account(s, account_id=i)),
        )

    @tool("Get an account by id, with its balance (debits minus credits).")
    def finance_get_account(account_id: Id) -> dict[str, Any]:
        return app.run(
            lambda s: dump(
                finance.get_account(s, account_id=account_id),
                balance=finance.account_balance(s, account_id=account_id),
            )
        )

    @tool("Search accounts by code or name fragment and type.")
    def finance_search_accounts(
        query: Query = "", type: AccountType | None = None, limit: Limit = 50
    ) -> dict[str, Any]:
        return app.run(
            lambda s: {
                "results": [
                    dump(a) for a in finance.search_accounts(s, query=query, type=type, limit=limit)
                ]
            }
        )

    @tool(
        "Post a double-entry transaction: two or more lines, positive amounts "
        "debit, negative amounts credit, and they must sum to exactly zero."
    )
    def finance_post_transaction(
        memo: Name,
        lines: LedgerLines,
        reference: Reference | None = None,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        specs = [finance.LineSpec(line.account_id, line.amount) for line in lines]
        return app.create(
            model=LedgerTransaction,
            key=idempotency_key,
            arguments={
                "memo": memo,
                "lines": [line.model_dump() for line in lines],
                "reference": reference,
            },
            make=lambda s: finance.post_transaction(
                s, memo=memo, lines=specs, reference=reference
            ).id,
            load=_transaction,
        )

    @tool("Get a ledger transaction with its lines.")
    def finance_get_transaction(transaction_id: Id) -> dict[str, Any]:
        return app.run(lambda s: _transaction(s, transaction_id))

    @tool(
        "Create a draft invoice with at least one line; line totals and the "
        "invoice total are computed by PostgreSQL."
    )
    def finance_create_invoice(
        number: InvoiceNumber,
        customer_name: Name,
        lines: InvoiceLines,
        contact_id: Id | None = None,
        due_date: dt.date | None = None,
        notes: Text = "",
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        specs = [finance.InvoiceLineSpec(x.description, x.quantity, x.unit_price) for x in lines]
        return app.create(
            model=Invoice,
            key=idempotency_key,
            arguments={
                "number": number,
                "customer_name": customer_name,
                "lines": [x.model_dump() for x in lines],
                "contact_id": contact_id,
                "due_date": due_date,
                "notes": notes,
            },
            make=lambda s: finance.create_invoice(
                s,
                number=number,
                customer_name=customer_name,
                lines=specs,
                contact_id=contact_id,
                due_date=due_date,
                notes=notes,
            ).id,
            load=_invoice,
        )

    @tool("Get an invoice with its lines and SQL-computed total.")
    def finance_get_invoice(invoice_id: Id) -> dict[str, Any]:
        return app.run(lambda s: _invoice(s, invoice_id))

    @tool("Search invoices by customer name fragment and status.")
    def finance_search_invoices(
        customer: Query = "", status: InvoiceStatus | None = None, limit: Limit = 50
    ) -> dict[str, Any]:
        return app.run(
            lambda s: {
                "results": [
                    dump(i)
                    for i in finance.search_invoices(
                        s, customer=customer, status=status, limit=limit
                    )
                ]
            }
        )
