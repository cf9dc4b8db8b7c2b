"""Ticket tables: tickets and their audit trail of events."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import DateTime, ForeignKey, Index, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from opsdesk.db import Base, enum_check, utcnow
from opsdesk.domains.tasks.models import Priority


class TicketStatus(StrEnum):
    """States of the support state machine."""

    OPEN = "open"
    PENDING = "pending"
    RESOLVED = "resolved"
    CLOSED = "closed"


class Ticket(Base):
    """A support request with a priority-derived SLA due time."""

    __tablename__ = "tickets"
    __table_args__ = (
        enum_check("status", [s.value for s in TicketStatus]),
        enum_check("priority", [p.value for p in Priority]),
        Index("ix_tickets_status_sla", "status", "sla_due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subject: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    requester_email: Mapped[str] = mapped_column(String(320))
    priority: Mapped[str] = mapped_column(String(10), default=Priority.NORMAL.value)
    status: Mapped[str] = mapped_column(String(20), default=TicketStatus.OPEN.value)
    sla_due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )

    events: Mapped[list[TicketEvent]] = relationship(
        back_populates="ticket", cascade="all, delete-orphan", order_by="TicketEvent.id"
    )


class TicketEvent(Base):
    """One audit-trail row: creation or a status transition."""

    __tablename__ = "ticket_events"
    __table_args__ = (
        enum_check("kind", ["created", "transition"]),
        enum_check("from_status", [s.value for s in TicketStatus]),
        enum_check("to_status", [s.value for s in TicketStatus]),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(200))
    note: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )

    ticket: Mapped[Ticket] = relationship(back_populates="events")
