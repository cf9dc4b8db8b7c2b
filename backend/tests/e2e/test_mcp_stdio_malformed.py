"""Malformed lines to `python -m opsdesk.mcp_server` over real stdio: each gets its JSON-RPC 2.0
error within a second, and the server goes on serving."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine
from stdio_server import ANSWER_WITHIN, StdioServer, server_env

from testbed.isolation.workers import Worker
from testbed.services import Endpoints

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
    e2e_docker_compose: Endpoints, e2e_worker: Worker, e2e_engine: Engine
) -> None:
    server = StdioServer(server_env(e2e_docker_compose, e2e_worker))
    try:
        server.initialize()
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
    finally:
        log = server.log()
        code = server.close()
    assert code == 0, f"the server did not exit cleanly at end of input:\n{log}"
