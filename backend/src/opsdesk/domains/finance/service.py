"""Finance rules: balanced double entry on exact decimals; invoices totalled in SQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from opsdesk import events
from opsdesk.domains.finance.models import (
    Account,
    AccountType,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    LedgerLine,
    LedgerTransaction,
)
from opsdesk.errors import InvalidArgument, NotFound, RuleViolation
from opsdesk.text_filters import contains_text
from opsdesk.unit_of_work import (
    get_or_raise,
    require_choice,
    require_no_nul,
    require_text,
    unit_of_work,
)

CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("9999999999999999.99")  # Numeric(18, 2)


@dataclass(frozen=True)
class LineSpec:
    """One ledger line to post: a positive amount debits, a negative one credits."""

    account_id: int
    amount: Decimal


@dataclass(frozen=True)
class InvoiceLineSpec:
    """One invoice line to create."""

    description: str
    quantity: Decimal
    unit_price: Decimal


def money(value: Decimal | int | str, *, field: str = "amount") -> Decimal:
    """Return ``value`` as an exact 2-place Decimal; floats and sub-cent digits are refused."""
    if isinstance(value, float | bool):
        raise InvalidArgument(f"{field} must be a decimal string or integer, not a float")
    try:
        amount = Decimal(value)
    except ArithmeticError as exc:
        raise InvalidArgument(f"{field} {value!r} is not a number") from exc
    if not amount.is_finite():
        raise InvalidArgument(f"{field} must be finite, got {value!r}")
    if amount != amount.quantize(CENT):
        raise InvalidArgument(f"{field} {value} has more than 2 decimal places")
    if abs(amount) > MAX_AMOUNT:
        raise InvalidArgument(f"{field} {value} exceeds {MAX_AMOUNT}")
    return amount.quantize(CENT)


def check_balanced(lines: Sequence[LineSpec]) -> list[LineSpec]:
    """Return the lines as exact money, or raise RuleViolation unless they form a balanced entry."""
    if len(lines) < 2:
        raise RuleViolation(
            f"a ledger transaction needs at least two lines (got {len(lines)}): "
            "debit one account and credit another"
        )
    exact = [LineSpec(line.account_id, money(line.amount)) for line in lines]
    zero = [i for i, line in enumerate(exact) if line.amount == 0]
    if zero:
        raise RuleViolation(f"line(s) {zero} have a zero amount; every line must move money")
    total = sum((line.amount for line in exact), Decimal("0.00"))
    if total != 0:
        raise RuleViolation(
            f"the lines sum to {total}, not 0: debits (positive) must equal credits (negative)"
        )
    return exact


def create_account(session: Session, *, code: str, name: str, type: str) -> Account:
    """Create a ledger account; a duplicate code raises Conflict."""
    account = Account(
        code=require_text(code, field="code", max_length=20),
        name=require_text(name, field="name", max_length=200),
        type=require_choice(type, AccountType, field="type"),
    )
    with unit_of_work(session, what=f"account with code {code!r}"):
        session.add(account)
        session.flush()
        events.record(session, "finance", "account.created", account.id, code=account.code)
    return account


def get_account(session: Session, *, account_id: int) -> Account:
    """Return an account or raise NotFound."""
    return get_or_raise(session, Account, account_id, what="account")


def search_accounts(
    session: Session, *, query: str = "", type: str | None = None, limit: int = 50
) -> list[Account]:
    """Return accounts whose code or name contains ``query``."""
    stmt = (
        select(Account)
        .where(contains_text(query, Account.code, Account.name))
        .order_by(Account.code)
        .limit(limit)
    )
    if type is not None:
        stmt = stmt.where(Account.type == require_choice(type, AccountType, field="type"))
    return list(session.scalars(stmt))


def account_balance(session: Session, *, account_id: int) -> Decimal:
    """Return the account's balance (debits minus credits), summed in SQL."""
    get_account(session, account_id=account_id)
    stmt = select(func.coalesce(func.sum(LedgerLine.amount), 0)).where(
        LedgerLine.account_id == account_id
    )
    return Decimal(session.scalar(stmt) or 0).quantize(CENT)


def post_transaction(
    session: Session, *, memo: str, lines: Sequence[LineSpec], reference: str | None = None
) -> LedgerTransaction:
    """Post a balanced journal entry; unbalanced, empty or one-line entries raise RuleViolation."""
    exact = check_balanced(lines)
    txn = LedgerTransaction(
        memo=require_text(memo, field="memo", max_length=500),
        reference=require_no_nul(reference, field="reference"),
    )
    txn.lines = [LedgerLine(account_id=line.account_id, amount=line.amount) for line in exact]
    wanted = {line.account_id for line in exact}
    with unit_of_work(
        session, what="ledger transaction" + (f" {reference!r}" if reference else "")
    ):
        found = set(session.scalars(select(Account.id).where(Account.id.in_(wanted))))
        if missing := sorted(wanted - found):
            raise NotFound(f"account(s) {missing} do not exist; create them first")
        session.add(txn)
        session.flush()
        events.record(
            session,
            "finance",
            "transaction.posted",
            txn.id,
            lines=[{"account_id": x.account_id, "amount": x.amount} for x in exact],
        )
    return txn


def get_transaction(session: Session, *, transaction_id: int) -> LedgerTransaction:
    """Return a ledger transaction or raise NotFound."""
    return get_or_raise(session, LedgerTransaction, transaction_id, what="ledger transaction")


def create_invoice(
    session: Session,
    *,
    number: str,
    customer_name: str,
    lines: Sequence[InvoiceLineSpec],
    contact_id: int | None = None,
    due_date: date | None = None,
    notes: str = "",
) -> Invoice:
    """Create a draft invoice with lines; PostgreSQL computes line totals and the invoice total."""
    if not lines:
        raise RuleViolation("an invoice needs at least one line")
    invoice = Invoice(
        number=require_text(number, field="number", max_length=40),
        customer_name=require_text(customer_name, field="customer_name", max_length=200),
        contact_id=contact_id,
        due_date=due_date,
        notes=require_no_nul(notes, field="notes"),
        status=InvoiceStatus.DRAFT.value,
    )
    for i, spec in enumerate(lines):
        quantity = Decimal(spec.quantity)
        if quantity <= 0 or quantity != quantity.quantize(Decimal("0.001")):
            raise InvalidArgument(f"line {i}: quantity must be > 0 with at most 3 decimals")
        price = money(spec.unit_price, field=f"line {i} unit_price")
        if price < 0:
            raise InvalidArgument(f"line {i}: unit_price must be zero or more")
        invoice.lines.append(
            InvoiceLine(
                description=require_text(spec.description, field="description", max_length=500),
                quantity=quantity,
                unit_price=price,
            )
        )
    with unit_of_work(session, what=f"invoice {number!r}"):
        session.add(invoice)
        session.flush()
        total = invoice_total(session, invoice_id=invoice.id)
        events.record(session, "finance", "invoice.created", invoice.id, number=number, total=total)
    session.refresh(invoice, ["total"])
    return invoice


def get_invoice(session: Session, *, invoice_id: int) -> Invoice:
    """Return an invoice (with its SQL-computed total) or raise NotFound."""
    return get_or_raise(session, Invoice, invoice_id, what="invoice")


def invoice_total(session: Session, *, invoice_id: int) -> Decimal:
    """Return the sum of an invoice's line totals, computed by PostgreSQL."""
    stmt = select(func.coalesce(func.sum(InvoiceLine.line_total), 0)).where(
        InvoiceLine.invoice_id == invoice_id
    )
    return Decimal(session.scalar(stmt) or 0).quantize(CENT)


def search_invoices(
    session: Session, *, customer: str = "", status: str | None = None, limit: int = 50
) -> list[Invoice]:
    """Return invoices by customer name fragment and status, newest first."""
    stmt = (
        select(Invoice)
        .where(contains_text(customer, Invoice.customer_name, field="customer"))
        .order_by(Invoice.id.desc())
        .limit(limit)
    )
    if status is not None:
        stmt = stmt.where(Invoice.status == require_choice(status, InvoiceStatus, field="status"))
    return list(session.scalars(stmt))
