"""MCP tools without services: listing, argument validation of every tool, error translation."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult
from sqlalchemy.orm import Session

from opsdesk import mcp_tools
from opsdesk.app import App
from opsdesk.domains.crm.models import DealStage
from opsdesk.domains.finance.models import AccountType, InvoiceStatus
from opsdesk.domains.tasks.models import Priority, TaskStatus
from opsdesk.domains.tickets.models import TicketStatus
from opsdesk.events import EventBus
from opsdesk.mcp_server import build_server

Scope = Callable[[], AbstractContextManager[Any]]

TOOL_SOURCES = Path(mcp_tools.__file__).parent

ONE_LINE = [{"account_id": 1, "amount": "5.00"}]
LONG = "x" * 201

# One invalid call per tool, each breaking a different kind of constraint.
BAD_ARGUMENTS: dict[str, dict[str, Any]] = {
    "crm_create_company": {"name": ""},
    "crm_get_company": {"company_id": 0},
    "crm_create_contact": {"email": "not-an-email", "name": "A"},
    "crm_get_contact": {"contact_id": "one"},
    "crm_search_contacts": {"limit": 0},
    "crm_create_deal": {"title": "d", "amount": "-1"},
    "crm_get_deal": {"deal_id": -5},
    "crm_search_deals": {"stage": "negotiation"},
    "crm_move_deal": {"deal_id": 1, "stage": "closed"},
    "tasks_create_task": {"title": "t", "due_at": "2030-01-01T00:00:00"},
    "tasks_get_task": {"task_id": 2**31},
    "tasks_search_tasks": {"status": "blocked"},
    "tasks_set_status": {"task_id": 1, "status": "finished"},
    "tasks_add_comment": {"task_id": 1, "author": "", "body": "b"},
    "tasks_overdue": {"assignee": LONG},
    "tickets_create_ticket": {"subject": "s", "requester_email": "x@y.co", "priority": "p1"},
    "tickets_get_ticket": {"ticket_id": 0},
    "tickets_search_tickets": {"status": "waiting"},
    "tickets_transition": {"ticket_id": 1, "status": "escalated"},
    "tickets_history": {"ticket_id": "x"},
    "knowledge_create_doc": {"title": "t", "body": "b", "tags": [""]},
    "knowledge_get_doc": {"doc_id": 0},
    "knowledge_search": {"query": "q", "limit": 1000},
    "canvas_create": {"name": "c", "data": [1, 2]},
    "canvas_get": {"canvas_id": 0},
    "canvas_save": {"canvas_id": 1, "data": {}, "expected_version": 0},
    "canvas_query": {"path": ""},
    "finance_create_account": {"code": "1000", "name": "Cash", "type": "cash"},
    "finance_get_account": {"account_id": 0},
    "finance_search_accounts": {"type": "bank"},
    "finance_post_transaction": {"memo": "m", "lines": [{"account_id": 1, "amount": "1.001"}]},
    "finance_get_transaction": {"transaction_id": 0},
    "finance_create_invoice": {
        "number": "I-1",
        "customer_name": "C",
        "lines": [{"description": "x", "quantity": "0", "unit_price": "1"}],
    },
    "finance_get_invoice": {"invoice_id": 0},
    "finance_search_invoices": {"status": "overdue"},
}


def untouchable_scope() -> AbstractContextManager[Any]:
    """A session scope that fails the test if a tool reaches the database."""
    raise AssertionError("argument validation should have stopped this call before the database")


def make_app(scope: Scope = untouchable_scope) -> App:
    """An App with a stand-in session scope and no Valkey."""
    return App(session_scope=scope, bus=EventBus(None))


@functools.cache
def server_for(scope: Scope) -> MCPServer[Any]:
    """One server per session scope: building one (a pydantic model per tool) costs ~0.1 s, a
    call over a fresh client ~2 ms, and every test's call still goes through its own client."""
    return build_server(make_app(scope))


def call(name: str, arguments: dict[str, Any], scope: Scope = untouchable_scope) -> CallToolResult:
    """Call one tool over an in-memory MCP client, on an App with this session scope."""

    async def go() -> CallToolResult:
        async with Client(server_for(scope)) as client:
            return await client.call_tool(name, arguments)

    return anyio.run(go)


def text_of(result: CallToolResult) -> str:
    """Return the first text block of a tool result."""
    return str(getattr(result.content[0], "text", ""))


def list_tool_names() -> list[str]:
    """List the tool names the server advertises."""

    async def go() -> list[str]:
        async with Client(server_for(untouchable_scope)) as client:
            return sorted(t.name for t in (await client.list_tools()).tools)

    return anyio.run(go)


NO_ARGUMENTS = ["crm_pipeline_totals"]


def test_every_tool_has_a_bad_argument_case() -> None:
    assert list_tool_names() == sorted([*BAD_ARGUMENTS, *NO_ARGUMENTS])


def test_rule_bearing_operations_are_exposed() -> None:
    names = set(list_tool_names())
    assert {"crm_move_deal", "tickets_transition", "canvas_save", "finance_post_transaction",
            "finance_create_invoice", "knowledge_search"} <= names  # fmt: skip
    for domain in ("crm", "tasks", "tickets", "knowledge", "canvas", "finance"):
        mine = [n for n in names if n.startswith(domain + "_")]
        assert any("create" in n for n in mine), domain
        assert any("get" in n for n in mine), domain
        assert any("search" in n or "query" in n for n in mine), domain


@pytest.mark.parametrize("tool", sorted(BAD_ARGUMENTS))
def test_bad_arguments_return_a_tool_error(tool: str) -> None:
    result = call(tool, BAD_ARGUMENTS[tool])
    assert result.is_error
    assert "validation error" in text_of(result)


@pytest.mark.parametrize("tool", ["crm_create_contact", "canvas_save", "finance_create_invoice"])
def test_missing_required_arguments_return_a_tool_error(tool: str) -> None:
    result = call(tool, {})
    assert result.is_error
    assert "Field required" in text_of(result)


@contextmanager
def no_db_scope() -> Iterator[Any]:
    """A scope whose Session has no database (the rule fails before any SQL)."""
    yield Session()


@pytest.mark.parametrize(
    ("lines", "message"),
    [([], "at least two lines"), (ONE_LINE, "at least two lines"),
     ([{"account_id": 1, "amount": "5"}, {"account_id": 2, "amount": "-4"}], "sum to 1.00")],
)  # fmt: skip
def test_broken_ledger_rule_is_a_rule_violation_tool_error(
    lines: list[dict[str, Any]], message: str
) -> None:
    result = call("finance_post_transaction", {"memo": "m", "lines": lines}, no_db_scope)
    assert result.is_error
    assert text_of(result).split(": ", 1)[1].startswith("RuleViolation:")
    assert message in text_of(result)


def test_invoice_without_lines_is_a_rule_violation() -> None:
    args = {"number": "I-1", "customer_name": "C", "lines": []}
    result = call("finance_create_invoice", args, no_db_scope)
    assert result.is_error
    assert "RuleViolation: an invoice needs at least one line" in text_of(result)


def test_idempotency_key_without_valkey_is_refused_clearly() -> None:
    args = {"name": "Acme", "idempotency_key": "k1"}
    result = call("crm_create_company", args, no_db_scope)
    assert result.is_error
    assert "REDIS_URL" in text_of(result)


def test_malformed_idempotency_key_fails_validation() -> None:
    result = call("crm_create_company", {"name": "Acme", "idempotency_key": "a b"})
    assert result.is_error
    assert "validation error" in text_of(result)


def test_unexpected_errors_become_a_generic_tool_error_and_roll_back() -> None:
    rolled_back: list[bool] = []

    @contextmanager
    def exploding_scope() -> Iterator[Any]:
        try:
            yield Session()  # no database: the service fails at its first query
        except BaseException:
            rolled_back.append(True)
            raise

    result = call("crm_get_company", {"company_id": 1}, exploding_scope)
    assert result.is_error
    assert "InternalError: crm_get_company failed unexpectedly and changed nothing" in text_of(
        result
    )
    assert rolled_back == [True]


def input_schemas() -> dict[str, dict[str, Any]]:
    """Every tool's input schema, by tool name."""

    async def go() -> dict[str, dict[str, Any]]:
        async with Client(server_for(untouchable_scope)) as client:
            return {t.name: t.input_schema for t in (await client.list_tools()).tools}

    return anyio.run(go)


def enum_values(schema: dict[str, Any], argument: str) -> list[str]:
    """The allowed values of an enum argument (inline, optional, or a $ref into $defs)."""
    prop = schema["properties"][argument]
    for option in prop.get("anyOf", [prop]):
        if "$ref" in option:
            option = schema["$defs"][option["$ref"].rsplit("/", 1)[1]]
        if "enum" in option:
            return list(option["enum"])
    raise AssertionError(f"{argument} is not an enum: {prop}")


def test_tool_schemas_constrain_money_and_enums() -> None:
    schemas = input_schemas()
    assert enum_values(schemas["crm_move_deal"], "stage") == [
        "lead", "qualified", "proposal", "won", "lost"
    ]  # fmt: skip
    assert set(schemas["canvas_save"]["required"]) == {"canvas_id", "data", "expected_version"}
    assert "idempotency_key" in schemas["finance_create_invoice"]["properties"]


# Each enum argument, and the one model enum that defines its values.
ENUM_ARGUMENTS = {
    ("crm_search_deals", "stage"): DealStage,
    ("crm_move_deal", "stage"): DealStage,
    ("tasks_create_task", "priority"): Priority,
    ("tasks_search_tasks", "status"): TaskStatus,
    ("tasks_set_status", "status"): TaskStatus,
    ("tickets_create_ticket", "priority"): Priority,
    ("tickets_search_tickets", "status"): TicketStatus,
    ("tickets_search_tickets", "priority"): Priority,
    ("tickets_transition", "status"): TicketStatus,
    ("finance_create_account", "type"): AccountType,
    ("finance_search_accounts", "type"): AccountType,
    ("finance_search_invoices", "status"): InvoiceStatus,
}


def test_enum_arguments_take_their_values_from_the_model_enums() -> None:
    schemas = input_schemas()
    for (tool, argument), enum in ENUM_ARGUMENTS.items():
        assert enum_values(schemas[tool], argument) == [m.value for m in enum], (tool, argument)


def test_no_other_argument_is_an_enum() -> None:
    # A new enum argument belongs in ENUM_ARGUMENTS, tied to the model enum it comes from.
    found = {
        (tool, argument)
        for tool, schema in input_schemas().items()
        for argument, prop in schema.get("properties", {}).items()
        if "enum" in json.dumps(prop) or "$ref" in json.dumps(prop)
        if not argument.endswith("lines")
    }
    assert found == set(ENUM_ARGUMENTS)


def test_tool_modules_never_spell_a_tool_name() -> None:
    # Names come from the functions: a string naming a tool would be a second copy to drift.
    sources = {path.name: path.read_text() for path in TOOL_SOURCES.glob("*.py")}
    for tool in list_tool_names():
        spelled = [name for name, text in sources.items() if f'"{tool}"' in text]
        assert not spelled, f"{tool} is spelled out in {spelled}"
