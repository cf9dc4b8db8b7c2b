"""CRM rules: unique emails regardless of case, forward-only deal stages, pipeline totals."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from opsdesk import events
from opsdesk.db import utcnow
from opsdesk.domains.crm.models import Company, Contact, Deal, DealStage
from opsdesk.errors import Conflict, InvalidArgument, RuleViolation
from opsdesk.text_filters import contains_text
from opsdesk.unit_of_work import (
    get_or_raise,
    require_choice,
    require_email,
    require_no_nul,
    require_text,
    unit_of_work,
)

# Deals move forward one stage at a time or drop out as lost; won and lost are final.
STAGE_MOVES: dict[str, frozenset[str]] = {
    DealStage.LEAD: frozenset({DealStage.QUALIFIED, DealStage.LOST}),
    DealStage.QUALIFIED: frozenset({DealStage.PROPOSAL, DealStage.LOST}),
    DealStage.PROPOSAL: frozenset({DealStage.WON, DealStage.LOST}),
    DealStage.WON: frozenset(),
    DealStage.LOST: frozenset(),
}


@dataclass(frozen=True)
class StageTotal:
    """Number of deals and their summed amount in one stage."""

    stage: str
    count: int
    total: Decimal


def check_stage_move(current: str, target: str) -> None:
    """Raise RuleViolation unless a deal may move from ``current`` to ``target``."""
    require_choice(target, DealStage, field="stage")
    allowed = STAGE_MOVES[DealStage(current)]
    if target not in allowed:
        nexts = ", ".join(sorted(allowed)) or "nothing (the stage is final)"
        raise RuleViolation(f"a deal cannot move from {current} to {target}; allowed: {nexts}")


def create_company(session: Session, *, name: str, domain: str | None = None) -> Company:
    """Create a company."""
    company = Company(
        name=require_text(name, field="name", max_length=200),
        domain=require_no_nul(domain, field="domain"),
    )
    with unit_of_work(session, what=f"company {name!r}"):
        session.add(company)
        session.flush()
        events.record(session, "crm", "company.created", company.id, name=company.name)
    return company


def get_company(session: Session, *, company_id: int) -> Company:
    """Return a company or raise NotFound."""
    return get_or_raise(session, Company, company_id, what="company")


def create_contact(
    session: Session,
    *,
    email: str,
    name: str,
    phone: str | None = None,
    company_id: int | None = None,
) -> Contact:
    """Create a contact; an email that exists in any letter case raises Conflict."""
    email = require_email(email)
    contact = Contact(
        email=email,
        name=require_text(name, field="name", max_length=200),
        phone=require_no_nul(phone, field="phone"),
        company_id=company_id,
    )
    if company_id is not None:
        get_company(session, company_id=company_id)
    with unit_of_work(session, what=f"contact with email {email!r}"):
        if find_contact_by_email(session, email=email) is not None:
            raise Conflict(f"a contact with email {email!r} already exists (emails ignore case)")
        session.add(contact)
        session.flush()  # the unique index on lower(email) still guards against races
        events.record(session, "crm", "contact.created", contact.id, email=email, name=contact.name)
    return contact


def get_contact(session: Session, *, contact_id: int) -> Contact:
    """Return a contact or raise NotFound."""
    return get_or_raise(session, Contact, contact_id, what="contact")


def find_contact_by_email(session: Session, *, email: str) -> Contact | None:
    """Return the contact whose email matches ignoring case, or None."""
    wanted = require_no_nul(email, field="email").strip().lower()
    stmt = select(Contact).where(func.lower(Contact.email) == wanted)
    return session.scalars(stmt).one_or_none()


def search_contacts(session: Session, *, query: str = "", limit: int = 20) -> list[Contact]:
    """Return contacts whose name or email contains ``query`` (case-insensitive)."""
    stmt = (
        select(Contact)
        .where(contains_text(query, Contact.name, Contact.email))
        .order_by(Contact.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def create_deal(
    session: Session,
    *,
    title: str,
    amount: Decimal,
    company_id: int | None = None,
    contact_id: int | None = None,
) -> Deal:
    """Create a deal in the lead stage."""
    if amount < 0:
        raise InvalidArgument(f"amount must be zero or more, got {amount}")
    deal = Deal(
        title=require_text(title, field="title", max_length=200),
        amount=amount,
        stage=DealStage.LEAD.value,
        company_id=company_id,
        contact_id=contact_id,
    )
    with unit_of_work(session, what=f"deal {title!r}"):
        session.add(deal)
        session.flush()
        events.record(session, "crm", "deal.created", deal.id, amount=amount, stage=deal.stage)
    return deal


def get_deal(session: Session, *, deal_id: int) -> Deal:
    """Return a deal or raise NotFound."""
    return get_or_raise(session, Deal, deal_id, what="deal")


def search_deals(session: Session, *, stage: str | None = None, limit: int = 50) -> list[Deal]:
    """Return deals, optionally in one stage, newest first."""
    stmt = select(Deal).order_by(Deal.id.desc()).limit(limit)
    if stage is not None:
        stmt = stmt.where(Deal.stage == require_choice(stage, DealStage, field="stage"))
    return list(session.scalars(stmt))


def move_deal(session: Session, *, deal_id: int, stage: str) -> Deal:
    """Move a deal to ``stage``; forbidden moves raise RuleViolation."""
    with unit_of_work(session, what=f"deal {deal_id}"):
        deal = get_or_raise(session, Deal, deal_id, what="deal", lock=True)
        previous = deal.stage
        check_stage_move(previous, stage)
        deal.stage = stage
        deal.updated_at = utcnow()
        events.record(session, "crm", "deal.stage_changed", deal.id, previous=previous, stage=stage)
    return deal


def pipeline_totals(session: Session) -> list[StageTotal]:
    """Return count and summed amount per stage (every stage, zeros included), via GROUP BY."""
    stmt = select(Deal.stage, func.count(), func.coalesce(func.sum(Deal.amount), 0)).group_by(
        Deal.stage
    )
    found = {stage: (count, total) for stage, count, total in session.execute(stmt)}
    zero = (0, Decimal("0.00"))
    return [
        StageTotal(s.value, found.get(s.value, zero)[0], Decimal(found.get(s.value, zero)[1]))
        for s in DealStage
    ]
