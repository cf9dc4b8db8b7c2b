"""Tickets through MCP: the state machine, SLA from priority, reopen, audit trail, search."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from mcp import ClientSession
from mcp_calls import call, call_error, is_invalid
from sqlalchemy.orm import Session

from opsdesk.domains.tickets.models import Ticket
from testbed.data.context import DataContext
from testbed.isolation.pubsub import EventListener

SLA = {"urgent": 4, "high": 8, "normal": 24, "low": 72}


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


@pytest.mark.parametrize("priority", list(SLA))
async def test_sla_follows_priority(
    mcp_service: ClientSession, e2e_events: EventListener, e2e_data: DataContext, priority: str
) -> None:
    with e2e_events.subscribe("tickets") as sub:
        out = await call(
            mcp_service,
            "tickets_create_ticket",
            subject="Printer on fire",
            requester_email=e2e_data.email(),
            priority=priority,
        )
        event = sub.next()
    assert event["type"] == "tickets.ticket.opened"
    assert event["data"]["priority"] == priority
    assert _at(out["sla_due_at"]) - _at(out["created_at"]) == timedelta(hours=SLA[priority])
    assert out["status"] == "open"


async def test_bad_requester_email_is_refused(mcp_service: ClientSession) -> None:
    assert is_invalid(
        await call_error(
            mcp_service, "tickets_create_ticket", subject="S", requester_email="nobody"
        )
    )


async def test_full_lifecycle_with_audit_trail(
    mcp_service: ClientSession,
    e2e_session: Session,
    e2e_events: EventListener,
    e2e_data: DataContext,
) -> None:
    ticket = await call(
        mcp_service,
        "tickets_create_ticket",
        subject="VPN down",
        requester_email=e2e_data.email(),
        actor="alice",
    )
    with e2e_events.subscribe("tickets") as sub:
        for status in ("pending", "resolved", "closed"):
            out = await call(
                mcp_service,
                "tickets_transition",
                ticket_id=ticket["id"],
                status=status,
                actor="bob",
                note=f"to {status}",
            )
            event = sub.next()
            assert event["type"] == "tickets.ticket.transitioned"
            assert event["data"]["status"] == status
    assert out["status"] == "closed"
    assert out["resolved_at"] is not None
    history = await call(mcp_service, "tickets_history", ticket_id=ticket["id"])
    trail = [(e["kind"], e["from_status"], e["to_status"]) for e in history["events"]]
    assert trail == [
        ("created", None, "open"),
        ("transition", "open", "pending"),
        ("transition", "pending", "resolved"),
        ("transition", "resolved", "closed"),
    ]
    row = e2e_session.get(Ticket, ticket["id"])
    assert row is not None
    assert row.status == "closed"


@pytest.mark.parametrize("via", [("pending", "resolved"), ("pending", "resolved", "closed")])
async def test_reopen_restarts_the_sla_and_clears_resolved_at(
    mcp_service: ClientSession, e2e_data: DataContext, via: tuple[str, ...]
) -> None:
    ticket = await call(
        mcp_service,
        "tickets_create_ticket",
        subject="Again",
        requester_email=e2e_data.email(),
        priority="urgent",
    )
    for status in via:
        await call(mcp_service, "tickets_transition", ticket_id=ticket["id"], status=status)
    reopened = await call(mcp_service, "tickets_transition", ticket_id=ticket["id"], status="open")
    assert reopened["resolved_at"] is None
    assert _at(reopened["sla_due_at"]) > _at(ticket["sla_due_at"])
    assert _at(reopened["sla_due_at"]) - _at(reopened["updated_at"]) == timedelta(hours=4)


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ((), "resolved"),
        ((), "closed"),
        (("pending",), "open"),
        (("pending",), "closed"),
        (("pending", "resolved", "closed"), "pending"),
    ],
)
async def test_forbidden_transitions_are_refused(
    mcp_service: ClientSession,
    e2e_session: Session,
    e2e_events: EventListener,
    support_ticket_factory: object,
    path: tuple[str, ...],
    target: str,
) -> None:
    ticket = support_ticket_factory.create()  # type: ignore[attr-defined]
    for status in path:
        await call(mcp_service, "tickets_transition", ticket_id=ticket.id, status=status)
    with e2e_events.subscribe("tickets") as sub:
        message = await call_error(
            mcp_service, "tickets_transition", ticket_id=ticket.id, status=target
        )
        assert sub.drain() == []
    assert "RuleViolation" in message
    e2e_session.refresh(ticket)
    assert ticket.status == (path[-1] if path else "open")


async def test_transition_of_missing_ticket_is_not_found(mcp_service: ClientSession) -> None:
    assert "NotFound" in await call_error(
        mcp_service, "tickets_transition", ticket_id=31_337, status="pending"
    )
    assert "NotFound" in await call_error(mcp_service, "tickets_history", ticket_id=31_337)


async def test_get_and_search_tickets(
    mcp_service: ClientSession, support_ticket_factory: object
) -> None:
    support_ticket_factory.create_batch(5, priority="low")  # type: ignore[attr-defined]
    urgent = support_ticket_factory.create(  # type: ignore[attr-defined]
        subject="Database melted", priority="urgent"
    )
    got = await call(mcp_service, "tickets_get_ticket", ticket_id=urgent.id)
    assert got["subject"] == "Database melted"
    found = await call(mcp_service, "tickets_search_tickets", priority="urgent")
    assert [t["id"] for t in found["results"]] == [urgent.id]
    by_text = await call(mcp_service, "tickets_search_tickets", query="melted", status="open")
    assert [t["id"] for t in by_text["results"]] == [urgent.id]
    by_email = await call(
        mcp_service, "tickets_search_tickets", query=urgent.requester_email.upper()
    )
    assert [t["id"] for t in by_email["results"]] == [urgent.id]
