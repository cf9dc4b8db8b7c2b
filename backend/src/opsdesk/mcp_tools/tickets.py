"""Ticket tools: open, get, search, state transitions, audit history."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer

from opsdesk.app import App
from opsdesk.domains.tasks.models import Priority
from opsdesk.domains.tickets import service as tickets
from opsdesk.domains.tickets.models import Ticket, TicketStatus
from opsdesk.mcp_tools.registry import tool_registrar
from opsdesk.mcp_tools.types import (
    Actor,
    Email,
    Id,
    IdempotencyKey,
    Limit,
    Name,
    Query,
    Text,
    dump,
)


def register(server: MCPServer[Any], app: App) -> None:
    """Add the ticket tools to ``server``."""
    tool = tool_registrar(server)

    @tool(
        "Open a support ticket; its SLA due time follows the priority "
        "(urgent 4 h, high 8 h, normal 24 h, low 72 h)."
    )
    def tickets_create_ticket(
        subject: Name,
        requester_email: Email,
        description: Text = "",
        priority: Priority = Priority.NORMAL,
        actor: Actor = "mcp",
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        args: dict[str, Any] = {
            "subject": subject,
            "requester_email": requester_email,
            "description": description,
            "priority": priority,
            "actor": actor,
        }
        return app.create(
            model=Ticket,
            key=idempotency_key,
            arguments=args,
            make=lambda s: tickets.open_ticket(s, **args).id,
            load=lambda s, i: dump(tickets.get_ticket(s, ticket_id=i)),
        )

    @tool("Get a ticket by id.")
    def tickets_get_ticket(ticket_id: Id) -> dict[str, Any]:
        return app.run(lambda s: dump(tickets.get_ticket(s, ticket_id=ticket_id)))

    @tool("Search tickets by text, status and priority.")
    def tickets_search_tickets(
        query: Query = "",
        status: TicketStatus | None = None,
        priority: Priority | None = None,
        limit: Limit = 50,
    ) -> dict[str, Any]:
        return app.run(
            lambda s: {
                "results": [
                    dump(t)
                    for t in tickets.search_tickets(
                        s, query=query, status=status, priority=priority, limit=limit
                    )
                ]
            }
        )

    @tool(
        "Move a ticket: open → pending → resolved → closed; "
        "resolved or closed → open reopens it (and restarts the SLA)."
    )
    def tickets_transition(
        ticket_id: Id, status: TicketStatus, actor: Actor = "mcp", note: Text = ""
    ) -> dict[str, Any]:
        return app.run(
            lambda s: dump(
                tickets.transition_ticket(
                    s, ticket_id=ticket_id, status=status, actor=actor, note=note
                )
            )
        )

    @tool("A ticket's audit trail, oldest first.")
    def tickets_history(ticket_id: Id) -> dict[str, Any]:
        return app.run(
            lambda s: {"events": [dump(e) for e in tickets.ticket_history(s, ticket_id=ticket_id)]}
        )
