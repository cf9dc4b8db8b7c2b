"""`python -m opsdesk.mcp_server` over real stdio, one server for the module (starting one costs
more than the tests): the SDK's own MCP client calls a tool of every domain; malformed lines each
get their JSON-RPC 2.0 error within a second while the server goes on serving; and when its input
ends, the server exits with status 0 (checked as the module's server is closed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from mcp import Client
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from stdio_server import ANSWER_WITHIN, StdioServer, pipe_transport, server_env

from opsdesk.domains.crm.models import Contact
from opsdesk.domains.tasks.models import Task
from testbed.data.context import DataContext
from testbed.isolation.pubsub import EventListener
from testbed.isolation.workers import Worker
from testbed.services.endpoints import Endpoints

# One worker runs this module's tests (scripts/e2e.sh passes --dist loadgroup), so one server.
pytestmark = pytest.mark.xdist_group("opsdesk_stdio")


@pytest.fixture(scope="module")
def opsdesk_stdio(e2e_docker_compose: Endpoints, e2e_worker: Worker) -> Iterator[StdioServer]:
    """The server in the worker's schema and Valkey namespace, initialized; closed after the
    module's last test, when it must exit with status 0 at the end of its input."""
    server = StdioServer(server_env(e2e_docker_compose, e2e_worker))
    try:
        server.initialize()
    except BaseException:
        server.close()
        raise
    yield server
    log = server.log()
    code = server.close()
    assert code == 0, f"the server did not exit cleanly at end of input:\n{log}"


@pytest.mark.heavy
@pytest.mark.committed
@pytest.mark.anyio
async def test_stdio_server_one_tool_per_domain(
    opsdesk_stdio: StdioServer,
    e2e_session: Session,
    e2e_events: EventListener,
    e2e_data: DataContext,
) -> None:
    calls = [
        ("crm_create_contact", {"email": e2e_data.email(), "name": "Stdio User"}),
        ("tasks_create_task", {"title": "Over stdio"}),
        ("tickets_create_ticket", {"subject": "Stdio", "requester_email": e2e_data.email()}),
        ("knowledge_create_doc", {"title": "Stdio doc", "body": "Spoken over pipes."}),
        ("canvas_create", {"name": "Stdio canvas", "data": {"a": 1}}),
        (
            "finance_create_account",
            {"code": e2e_data.code("SIO-", 8), "name": "Stdio", "type": "asset"},
        ),
    ]
    domains = ("crm", "tasks", "tickets", "knowledge", "canvas", "finance")
    with e2e_events.subscribe(*domains) as sub:
        async with Client(pipe_transport(opsdesk_stdio)) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            for tool, args in calls:
                assert tool in tools
                result = await client.call_tool(tool, args)
                assert not result.is_error, result.content
        events = sub.drain()
    assert {e["domain"] for e in events} == set(domains)
    # The server committed into this worker's schema: the test's Session sees it.
    assert e2e_session.scalar(select(func.count()).select_from(Contact)) == 1
    assert e2e_session.scalar(select(Task.title)) == "Over stdio"


PARSE_ERROR, INVALID_REQUEST = -32700, -32600
DEEP = 100_000
LINE_LIMIT = 16 * 1024 * 1024  # bytes: the longest line the server reads (docs/opsdesk.md)


def _request(id_json: str, rest: str = ', "method": "ping"}') -> bytes:
    return f'{{"jsonrpc": "2.0", "id": {id_json}{rest}'.encode()


PING_7 = b'{"jsonrpc": "2.0", "id": 7, "method": "ping"'
NESTED = b"[" * DEEP + b"]" * DEEP
# name: (line, JSON-RPC error code, the id the answer must carry)
MALFORMED: dict[str, tuple[bytes, int, Any]] = {
    "not JSON": (b"this is not json", PARSE_ERROR, None),
    "truncated object": (PING_7, PARSE_ERROR, None),
    "invalid UTF-8": (b"\xff\xfe\xfd", PARSE_ERROR, None),
    "invalid UTF-8 inside a string": (
        PING_7 + b', "params": {"x": "\xc3\x28"}}',
        PARSE_ERROR,
        None,
    ),
    "lone surrogate escape": (PING_7 + b', "params": {"x": "\\ud800"}}', PARSE_ERROR, None),
    "NaN": (_request("NaN"), PARSE_ERROR, None),
    "deep nesting": (NESTED, PARSE_ERROR, None),
    "deep nesting in params": (PING_7 + b', "params": {"x": ' + NESTED + b"}}", PARSE_ERROR, None),
    "array of numbers": (b"[1, 2, 3]", INVALID_REQUEST, None),
    "batch": (b"[" + _request("7") + b"]", INVALID_REQUEST, None),
    "empty array": (b"[]", INVALID_REQUEST, None),
    "number": (b"42", INVALID_REQUEST, None),
    "string": (b'"ping"', INVALID_REQUEST, None),
    "null": (b"null", INVALID_REQUEST, None),
    "empty object": (b"{}", INVALID_REQUEST, None),
    "id is a fraction": (_request("1.5"), INVALID_REQUEST, None),
    "id is a boolean": (_request("true"), INVALID_REQUEST, None),
    "id is an object": (_request('{"a": 1}'), INVALID_REQUEST, None),
    "id is an array": (_request("[7]"), INVALID_REQUEST, None),
    "id is null": (_request("null"), INVALID_REQUEST, None),
    # A usable id is echoed, so the caller waiting on it gets its answer.
    "no method": (_request("7", "}"), INVALID_REQUEST, 7),
    "method is a number": (_request('"r-7"', ', "method": 5}'), INVALID_REQUEST, "r-7"),
    "JSON-RPC 1.0": (b'{"jsonrpc": "1.0", "id": 7, "method": "ping"}', INVALID_REQUEST, 7),
    "params not an object": (PING_7 + b', "params": "x"}', INVALID_REQUEST, 7),
    "past the line limit": (
        PING_7 + b', "x": "' + b"a" * LINE_LIMIT + b'"}',
        INVALID_REQUEST,
        None,
    ),
}


def _problem(answer: dict[str, Any] | None, code: int, expected_id: Any) -> str | None:
    """What is wrong with ``answer`` to a malformed line, or None."""
    if answer is None:
        return f"no answer within {ANSWER_WITHIN} s"
    title = "Parse error" if code == PARSE_ERROR else "Invalid Request"
    error = answer.get("error") or {}
    if answer.get("jsonrpc") != "2.0" or answer.get("id", "missing") != expected_id:
        return f"wrong envelope (want id {expected_id!r}): {answer}"
    if error.get("code") != code or not str(error.get("message")).startswith(title):
        return f"want {code} {title}: {answer}"
    return None


@pytest.mark.heavy
def test_every_malformed_line_gets_its_error_and_the_server_goes_on(
    opsdesk_stdio: StdioServer,
) -> None:
    server = opsdesk_stdio
    server.drain()  # a late notification of an earlier test is not an answer
    problems: dict[str, str] = {}
    for case, (line, code, expected_id) in MALFORMED.items():
        server.send(line)
        # The 16 MiB line takes a moment to cross the pipe before it can be answered.
        within = 10 * ANSWER_WITHIN if len(line) > LINE_LIMIT else ANSWER_WITHIN
        if problem := _problem(server.receive(within), code, expected_id):
            problems[case] = problem
        # Still serving, and the bad line got exactly one answer: the next is the ping's.
        if (pong := server.request("ping")) is None or pong.get("result") != {}:
            problems[f"{case}, then ping"] = f"got {pong}"
    assert not problems, "\n".join(f"{case}: {why}" for case, why in problems.items())
    server.send(b"")
    server.send(b"  \t\r")  # blank lines are not messages: no answer
    tools = server.request("tools/list")
    assert tools is not None
    assert "crm_search_contacts" in {tool["name"] for tool in tools["result"]["tools"]}
    found = server.request(
        "tools/call", {"name": "crm_search_contacts", "arguments": {"query": "no_body"}}
    )
    assert found is not None
    assert found["result"]["structuredContent"] == {"results": []}, found
