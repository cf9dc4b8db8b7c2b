"""The stdio transport without services: line checks, and a whole session over byte buffers."""

from __future__ import annotations

import io
import json
import threading
from typing import Any, BinaryIO, cast

import anyio
import mcp_types as types
import pytest

from opsdesk.app import App
from opsdesk.events import EventBus
from opsdesk.mcp_server import build_server, valkey_timeout
from opsdesk.stdio import INVALID_REQUEST, PARSE_ERROR, check_line, stdio_streams


@pytest.mark.parametrize(
    ("line", "code", "request_id"),
    [
        (b"{", PARSE_ERROR, None),
        (b"\xff", PARSE_ERROR, None),
        (b'{"jsonrpc": "2.0", "id": Infinity, "method": "ping"}', PARSE_ERROR, None),
        (b"[" * 1000 + b"]" * 1000, PARSE_ERROR, None),
        (b"[]", INVALID_REQUEST, None),
        (b"true", INVALID_REQUEST, None),
        (b'{"jsonrpc": "2.0", "id": false, "method": "ping"}', INVALID_REQUEST, None),
        (b'{"jsonrpc": "2.0", "id": 2.0, "method": "ping"}', INVALID_REQUEST, None),
        (b'{"jsonrpc": "2.0", "id": 3, "method": ["ping"]}', INVALID_REQUEST, 3),
        (b'{"jsonrpc": "2.0", "id": "x", "params": {}}', INVALID_REQUEST, "x"),
    ],
)
def test_malformed_lines_get_the_right_error(line: bytes, code: int, request_id: Any) -> None:
    checked = check_line(line)
    assert isinstance(checked, types.JSONRPCError)
    assert (checked.error.code, checked.id) == (code, request_id)
    assert "JSON-RPC 2.0 object per line" in checked.error.message


def test_well_formed_lines_pass_and_blank_lines_are_nothing() -> None:
    assert isinstance(
        check_line(b' {"jsonrpc": "2.0", "id": 2, "method": "ping"}\r\n'), types.JSONRPCRequest
    )
    assert isinstance(
        check_line(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}'),
        types.JSONRPCNotification,
    )
    assert isinstance(
        check_line(b'{"jsonrpc": "2.0", "id": 9, "result": {}}'), types.JSONRPCResponse
    )
    assert check_line(b" \t\r\n") is None


def test_the_error_is_serialized_with_a_null_id() -> None:
    checked = check_line(b"nope")
    assert isinstance(checked, types.JSONRPCError)
    wire = json.loads(checked.model_dump_json(by_alias=True, exclude_unset=True))
    assert wire["id"] is None
    assert wire["error"]["code"] == PARSE_ERROR


class Client:
    """Both ends of the server's pipes: lines to read, then end of input once ``expected``
    answers were written (closing earlier would cancel requests still being answered)."""

    def __init__(self, lines: list[bytes], expected: int) -> None:
        self.lines, self.expected = list(lines), expected
        self.written = io.BytesIO()
        self.answered = threading.Event()

    def readline(self, limit: int = -1) -> bytes:
        """The next line, or b"" (end of input) once every answer is in."""
        if self.lines:
            return self.lines.pop(0)
        self.answered.wait(timeout=30)
        return b""

    def write(self, data: bytes) -> int:
        """Collect the server's output."""
        self.written.write(data)
        if self.written.getvalue().count(b"\n") >= self.expected:
            self.answered.set()
        return len(data)

    def flush(self) -> None:
        """Nothing to flush."""

    def answers(self) -> list[dict[str, Any]]:
        """The server's output, one JSON message per line."""
        return [json.loads(line) for line in self.written.getvalue().splitlines()]


def test_a_whole_session_answers_every_line_and_ends_at_end_of_input() -> None:
    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "unit", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        "not json",
        {"jsonrpc": "2.0", "id": 2.5, "method": "ping"},
        {"jsonrpc": "2.0", "id": 3, "method": "ping"},
    ]  # fmt: skip
    client = Client(
        [(x.encode() if isinstance(x, str) else json.dumps(x).encode()) + b"\n" for x in lines],
        expected=4,
    )
    server = build_server(App(session_scope=None, bus=EventBus(None)))  # type: ignore[arg-type]
    lowlevel = server._lowlevel_server
    source, sink = cast(BinaryIO, client), cast(BinaryIO, client)

    async def serve() -> None:
        with anyio.fail_after(30):
            async with stdio_streams(source, sink) as (read_stream, write_stream):
                options = lowlevel.create_initialization_options()
                await lowlevel.run(read_stream, write_stream, options)

    anyio.run(serve)
    answers = client.answers()
    by_id = {json.dumps(a.get("id")): a for a in answers}
    assert len(answers) == 4, answers
    assert "result" in by_id["1"]
    assert by_id["3"]["result"] == {}
    errors = sorted(a["error"]["code"] for a in answers if a["id"] is None)
    assert errors == sorted([INVALID_REQUEST, PARSE_ERROR])


@pytest.mark.parametrize(("raw", "expected"), [("", 5.0), ("0.25", 0.25), (" 30 ", 30.0)])
def test_valkey_timeout_from_the_environment(raw: str, expected: float) -> None:
    assert valkey_timeout({"OPSDESK_VALKEY_TIMEOUT": raw}) == expected


@pytest.mark.parametrize("raw", ["soon", "0", "-1", "601", "nan"])
def test_a_bad_valkey_timeout_is_refused_with_what_to_do(raw: str) -> None:
    with pytest.raises(SystemExit, match=r"OPSDESK_VALKEY_TIMEOUT=.*unset it for the default"):
        valkey_timeout({"OPSDESK_VALKEY_TIMEOUT": raw})
