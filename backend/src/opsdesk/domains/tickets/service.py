"""Ticket rules: the state machine, SLA due times from priority, an audit row per event."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from opsdesk import events
from opsdesk.db import utcnow
from opsdesk.domains.tasks.models import Priority
from opsdesk.domains.tickets.models import Ticket, TicketEvent, TicketStatus
from opsdesk.errors import RuleViolation
from opsdesk.text_filters import contains_text
from opsdesk.unit_of_work import (
    get_or_raise,
    require_choice,
    require_email,
    require_no_nul,
    require_text,
    unit_of_work,
)

SLA_HOURS: dict[str, int] = {
    Priority.URGENT: 4,
    Priority.HIGH: 8,
    Priority.NORMAL: 24,
    Priority.LOW: 72,
}

# open → pending → resolved → closed; resolved or closed can be reopened.
TRANSITIONS: dict[str, frozenset[str]] = {
    TicketStatus.OPEN: frozenset({TicketStatus.PENDING}),
    TicketStatus.PENDING: frozenset({TicketStatus.RESOLVED}),
    TicketStatus.RESOLVED: frozenset({TicketStatus.CLOSED, TicketStatus.OPEN}),
    TicketStatus.CLOSED: frozenset({TicketStatus.OPEN}),
}

ACTIVE = (TicketStatus.OPEN.value, TicketStatus.PENDING.value)


def sla_due(priority: str, start: datetime) -> datetime:
    """Return when a ticket of ``priority`` opened (or reopened) at ``start`` is due."""
    require_choice(priority, Priority, field="priority")
    return start + timedelta(hours=SLA_HOURS[priority])


def check_transition(current: str, target: str) -> None:
    """Raise RuleViolation unless a ticket may go from ``current`` to ``target``."""
    require_choice(target, TicketStatus, field="status")
    allowed = TRANSITIONS[TicketStatus(current)]
    if target not in allowed:
        raise RuleViolation(
            f"a ticket cannot go from {current} to {target}; "
            f"from {current} it can go to: {', '.join(sorted(allowed))}"
        )


def open_ticket(
    session: Session,
    *,
    subject: str,
    requester_email: str,
    description: str = "",
    priority: str = Priority.NORMAL,
    actor: str = "system",
    now: datetime | None = None,
) -> Ticket:
    """Open a ticket with its SLA due time and a 'created' audit row."""
    require_no_nul(actor, field="actor")
    start = now or utcnow()
    ticket = Ticket(
        subject=require_text(subject, field="subject", max_length=200),
        requester_email=require_email(requester_email, field="requester_email"),
        description=require_no_nul(description, field="description"),
        priority=require_choice(priority, Priority, field="priority"),
        status=TicketStatus.OPEN.value,
        sla_due_at=sla_due(priority, start),
        created_at=start,
        updated_at=start,
    )
    ticket.events.append(
        TicketEvent(
            kind="created", to_status=TicketStatus.OPEN.value, actor=actor, created_at=start
        )
    )
    with unit_of_work(session, what=f"ticket {subject!r}"):
        session.add(ticket)
        session.flush()
        events.record(
            session,
            "tickets",
            "ticket.opened",
            ticket.id,
            priority=ticket.priority,
            sla_due_at=ticket.sla_due_at,
        )
    return ticket


def get_ticket(session: Session, *, ticket_id: int) -> Ticket:
    """Return a ticket or raise NotFound."""
    return get_or_raise(session, Ticket, ticket_id, what="ticket")


def search_tickets(
    session: Session,
    *,
    query: str = "",
    status: str | None = None,
    priority: str | None = None,
    limit: int = 50,
) -> list[Ticket]:
    """Return tickets matching the filters, most urgent SLA first."""
    stmt = (
        select(Ticket)
        .where(contains_text(query, Ticket.subject, Ticket.requester_email))
        .order_by(Ticket.sla_due_at, Ticket.id)
        .limit(limit)
    )
    if status is not None:
        stmt = stmt.where(Ticket.status == require_choice(status, TicketStatus, field="status"))
    if priority is not None:
        stmt = stmt.where(Ticket.priority == require_choice(priority, Priority, field="priority"))
    return list(session.scalars(stmt))


def transition_ticket(
    session: Session,
    *,
    ticket_id: int,
    status: str,
    actor: str = "system",
    note: str = "",
    now: datetime | None = None,
) -> Ticket:
    """Move a ticket to ``status``; forbidden moves raise RuleViolation; reopen restarts the SLA."""
    require_no_nul(actor, field="actor")
    require_no_nul(note, field="note")
    at = now or utcnow()
    with unit_of_work(session, what=f"ticket {ticket_id}"):
        ticket = get_or_raise(session, Ticket, ticket_id, what="ticket", lock=True)
        previous = ticket.status
        check_transition(previous, status)
        ticket.status = status
        ticket.updated_at = at
        if status == TicketStatus.RESOLVED:
            ticket.resolved_at = at
        elif status == TicketStatus.OPEN:
            ticket.resolved_at = None
            ticket.sla_due_at = sla_due(ticket.priority, at)
        session.add(
            TicketEvent(
                ticket_id=ticket.id,
                kind="transition",
                from_status=previous,
                to_status=status,
                actor=actor,
                note=note,
                created_at=at,
            )
        )
        events.record(
            session,
            "tickets",
            "ticket.transitioned",
            ticket.id,
            previous=previous,
            status=status,
            actor=actor,
        )
    return ticket


def ticket_history(session: Session, *, ticket_id: int) -> list[TicketEvent]:
    """Return a ticket's audit trail, oldest first."""
    get_ticket(session, ticket_id=ticket_id)
    stmt = select(TicketEvent).where(TicketEvent.ticket_id == ticket_id).order_by(TicketEvent.id)
    return list(session.scalars(stmt))


def breached_tickets(session: Session, *, now: datetime | None = None) -> list[Ticket]:
    """Return open or pending tickets past their SLA due time."""
    stmt = (
        select(Ticket)
        .where(Ticket.status.in_(ACTIVE), Ticket.sla_due_at < (now or utcnow()))
        .order_by(Ticket.sla_due_at, Ticket.id)
    )
    return list(session.scalars(stmt))
