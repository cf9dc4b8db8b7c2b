"""NUL characters (which PostgreSQL cannot store) are refused as invalid arguments (BUG-R5)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any

import anyio
import psycopg
import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult
from sqlalchemy.exc import DataError, DBAPIError

from opsdesk.app import App
from opsdesk.domains.canvas import service as canvas
from opsdesk.domains.crm import service as crm
from opsdesk.domains.finance import service as finance
from opsdesk.domains.tasks import service as tasks
from opsdesk.domains.tickets import service as tickets
from opsdesk.errors import InvalidArgument
from opsdesk.events import EventBus
from opsdesk.mcp_server import build_server
from opsdesk.unit_of_work import find_nul, translate, unit_of_work


def untouchable_scope() -> AbstractContextManager[Any]:
    """A session scope that fails the test if a tool reaches the database."""
    raise AssertionError("argument validation should have stopped this call before the database")


def make_app() -> App:
    """An App whose tools must never reach a database, and no Valkey."""
    return App(session_scope=untouchable_scope, bus=EventBus(None))


@functools.cache
def server() -> MCPServer[Any]:
    """One server for the module: building one (a pydantic model per tool) costs ~0.1 s, a call
    over a fresh client ~2 ms, and every test's call still goes through its own client."""
    return build_server(make_app())


def call(name: str, arguments: dict[str, Any]) -> CallToolResult:
    """Call one tool over an in-memory MCP client."""

    async def go() -> CallToolResult:
        async with Client(server()) as client:
            return await client.call_tool(name, arguments)

    return anyio.run(go)


def text_of(result: CallToolResult) -> str:
    """Return the first text block of a tool result."""
    return str(getattr(result.content[0], "text", ""))


NUL_REFUSED = "must not contain NUL (\\x00) characters"
LINES = [finance.LineSpec(1, Decimal("1.00")), finance.LineSpec(2, Decimal("-1.00"))]
ONE_LINE = [{"description": "x", "quantity": "1", "unit_price": "1"}]

# One NUL-bearing string argument per tool family; the server's App fails the test if a call
# gets past argument validation to the database.
NUL_STRINGS: list[tuple[str, dict[str, Any]]] = [
    ("crm_create_company", {"name": "a\x00b"}),
    ("crm_create_company", {"name": "Acme", "domain": "\x00"}),
    ("crm_create_contact", {"email": "a@b.co", "name": "A", "phone": "1\x002"}),
    ("crm_create_contact", {"email": "a\x00@b.co", "name": "A"}),
    ("crm_search_contacts", {"query": "x\x00"}),
    ("tasks_create_task", {"title": "t", "description": "d\x00"}),
    ("tasks_add_comment", {"task_id": 1, "author": "me", "body": "\x00"}),
    ("tasks_overdue", {"assignee": "\x00drop"}),
    ("tickets_create_ticket", {"subject": "s", "requester_email": "x@y.co", "actor": "a\x00"}),
    ("tickets_transition", {"ticket_id": 1, "status": "pending", "note": "n\x00"}),
    ("knowledge_create_doc", {"title": "t", "body": "b\x00"}),
    ("knowledge_create_doc", {"title": "t", "body": "b", "tags": ["ok", "x\x00"]}),
    ("knowledge_search", {"query": "\x00"}),
    ("canvas_create", {"name": "c\x00"}),
    ("canvas_query", {"path": "$.a\x00"}),
    ("finance_create_account", {"code": "1000", "name": "Cash\x00", "type": "asset"}),
    (
        "finance_post_transaction",
        {"memo": "m", "reference": "r\x00", "lines": [{"account_id": 1, "amount": "1"}] * 2},
    ),
    (
        "finance_create_invoice",
        {"number": "I-1", "customer_name": "C", "lines": ONE_LINE, "notes": "\x00"},
    ),
    (
        "finance_create_invoice",
        {"number": "I-1", "customer_name": "C", "lines": [{**ONE_LINE[0], "description": "\x00"}]},
    ),
    ("finance_search_invoices", {"customer": "\x00"}),
]

NUL_JSON: list[tuple[str, dict[str, Any], str]] = [
    ("canvas_create", {"name": "c", "data": {"k": "\x00"}}, "(at $.k)"),
    ("canvas_create", {"name": "c", "data": {"a": {"b\x00": 1}}}, "(at a key of $.a)"),
    ("canvas_save", {"canvas_id": 1, "data": {"\x00": 1}, "expected_version": 1}, "key of $"),
    (
        "canvas_save",
        {"canvas_id": 1, "data": {"a": [1, {"b": ["x", "y\x00"]}]}, "expected_version": 1},
        "(at $.a[1].b[1])",
    ),
    ("canvas_query", {"path": "$.a", "variables": {"v": {"w": "\x00"}}}, "(at $.v.w)"),
]


@pytest.mark.parametrize(("tool", "arguments"), NUL_STRINGS)
def test_nul_in_a_string_argument_is_refused_before_the_database(
    tool: str, arguments: dict[str, Any]
) -> None:
    result = call(tool, arguments)
    assert result.is_error
    assert "validation error" in text_of(result)
    assert NUL_REFUSED in text_of(result)
    assert "InternalError" not in text_of(result)


@pytest.mark.parametrize(("tool", "arguments", "where"), NUL_JSON)
def test_nul_in_nested_json_keys_and_values_is_refused(
    tool: str, arguments: dict[str, Any], where: str
) -> None:
    result = call(tool, arguments)
    assert result.is_error
    assert NUL_REFUSED in text_of(result)
    assert where in text_of(result)


def test_escaped_nul_text_is_an_ordinary_string() -> None:
    assert find_nul("\\x00") is None
    assert find_nul({"k": ["\\u0000", 1, None, 2.5]}) is None


@pytest.mark.parametrize("version", [0, 2**31, 2**63])
def test_a_canvas_version_that_cannot_exist_is_invalid(version: int) -> None:
    arguments = {"canvas_id": 1, "data": {}, "expected_version": version}
    result = call("canvas_save", arguments)
    assert result.is_error
    assert "validation error" in text_of(result)


def test_canvas_save_schema_bounds_the_version_and_says_so() -> None:
    async def go() -> Any:
        async with Client(server()) as client:
            return {t.name: t for t in (await client.list_tools()).tools}["canvas_save"]

    tool = anyio.run(go)
    version = tool.input_schema["properties"]["expected_version"]
    assert (version["minimum"], version["maximum"]) == (1, 2**31 - 1)
    assert "2147483647" in (tool.description or "")


class NoSession:
    """A stand-in Session: any use means the NUL got past the service's own check."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the service used the session ({name}) before refusing the NUL")


def no_session() -> Any:
    """A NoSession, typed for the services' Session parameter."""
    return NoSession()


SERVICE_CALLS: list[tuple[str, Callable[[Any], Any]]] = [
    ("name", lambda s: crm.create_company(s, name="a\x00b")),
    ("domain", lambda s: crm.create_company(s, name="Acme", domain="\x00")),
    ("phone", lambda s: crm.create_contact(s, email="a@b.co", name="A", phone="\x00")),
    ("query", lambda s: crm.search_contacts(s, query="\x00")),
    ("email", lambda s: crm.find_contact_by_email(s, email="a\x00@b.co")),
    ("title", lambda s: crm.create_deal(s, title="\x00", amount=Decimal(1))),
    ("description", lambda s: tasks.create_task(s, title="t", description="\x00")),
    ("assignee", lambda s: tasks.search_tasks(s, assignee="\x00")),
    ("assignee", lambda s: tasks.overdue_tasks(s, assignee="\x00")),
    ("actor", lambda s: tickets.open_ticket(s, subject="s", requester_email=EMAIL, actor="\x00")),
    ("note", lambda s: tickets.transition_ticket(s, ticket_id=1, status="pending", note="\x00")),
    ("query", lambda s: tickets.search_tickets(s, query="\x00")),
    ("reference", lambda s: finance.post_transaction(s, memo="m", lines=LINES, reference="\x00")),
    ("customer", lambda s: finance.search_invoices(s, customer="\x00")),
    ("canvas data", lambda s: canvas.create_canvas(s, name="c", data={"k": {"\x00": 1}})),
    ("canvas data", lambda s: canvas.save_canvas(s, canvas_id=1, data={"k": "\x00"}, **V9)),
    ("variables", lambda s: canvas.query_canvases(s, path="$.a", variables={"v": ["\x00"]})),
    ("path", lambda s: canvas.query_canvases(s, path="$.\x00")),
]  # fmt: skip
EMAIL = "a@b.co"
V9: dict[str, Any] = {"expected_version": 9}


@pytest.mark.parametrize(("field", "service_call"), SERVICE_CALLS)
def test_services_called_directly_refuse_nul(
    field: str, service_call: Callable[[Any], Any]
) -> None:
    with pytest.raises(InvalidArgument, match=rf"^{field} must not contain NUL \(\\x00\)"):
        service_call(no_session())


def test_stale_save_with_nul_is_invalid_not_internal() -> None:
    """The payload is checked before the version, so the caller learns what to fix."""
    with pytest.raises(InvalidArgument, match="canvas data must not contain NUL"):
        canvas.save_canvas(no_session(), canvas_id=1, data={"k": "\x00"}, expected_version=1)


@pytest.mark.parametrize("version", [0, -1, 2**31, 2**63])
def test_save_canvas_refuses_a_version_that_cannot_exist(version: int) -> None:
    with pytest.raises(InvalidArgument, match="cannot exist"):
        canvas.save_canvas(no_session(), canvas_id=1, data={}, expected_version=version)


class FakeDiag:
    """psycopg's Diagnostic, reduced to the fields translate() reads."""

    message_primary = "unsupported Unicode escape sequence"
    constraint_name = None
    message_detail = "\\u0000 cannot be converted to text."


class FakeUntranslatable(Exception):
    """What psycopg raises for \\u0000 inside JSONB (SQLSTATE 22P05)."""

    sqlstate = "22P05"
    diag = FakeDiag()


def client_side_nul_error() -> DataError:
    """The DataError psycopg raises before sending a str holding NUL, wrapped by SQLAlchemy."""
    try:
        psycopg.types.string.StrDumper(str).dump("a\x00b")
    except psycopg.DataError as exc:
        return DataError("INSERT ...", {}, exc)
    raise AssertionError("psycopg accepted a NUL byte")


def untranslatable_error() -> DBAPIError:
    """A SQLSTATE 22P05 error as SQLAlchemy wraps it."""
    return DataError("UPDATE canvas_docs ...", {}, FakeUntranslatable("unsupported escape"))


@pytest.mark.parametrize("make_error", [client_side_nul_error, untranslatable_error])
def test_translate_maps_nul_errors_to_invalid_argument(
    make_error: Callable[[], DBAPIError],
) -> None:
    error = translate(make_error(), "canvas 1")
    assert isinstance(error, InvalidArgument)
    assert str(error).startswith(f"canvas 1: text and JSON {NUL_REFUSED}")


class RollbackOnly:
    """A Session stand-in that records rollbacks."""

    def __init__(self) -> None:
        self.rolled_back = 0

    def rollback(self) -> None:
        """Record the rollback."""
        self.rolled_back += 1


@pytest.mark.parametrize("make_error", [client_side_nul_error, untranslatable_error])
def test_unit_of_work_rolls_back_and_raises_invalid_argument_for_nul(
    make_error: Callable[[], DBAPIError],
) -> None:
    session: Any = RollbackOnly()
    with pytest.raises(InvalidArgument, match="NUL"), unit_of_work(session, what="x"):
        raise make_error()
    assert session.rolled_back == 1


def test_other_data_errors_without_sqlstate_are_not_swallowed() -> None:
    error = DataError("SELECT 1", {}, psycopg.DataError("something else entirely"))
    with pytest.raises(DataError):
        translate(error, "x")
