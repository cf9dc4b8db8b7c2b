"""Malformed lines to `python -m opsdesk.mcp_server` over real stdio: each gets its JSON-RPC 2.0
error within a second, and the server goes on serving."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from typing import IO, Any

import pytest
from sqlalchemy import Engine

from testbed.services import Endpoints
from testbed.workers import Worker

ANSWER_WITHIN = 1.0  # seconds: what a client may wait for any answer
STARTUP_WITHIN = 60.0  # seconds: imports and the schema check, on a loaded machine
PARSE_ERROR, INVALID_REQUEST = -32700, -32600
DEEP = 100_000
LINE_LIMIT = 16 * 1024 * 1024  # bytes: the longest line the server reads (docs/opsdesk.md)


class StdioServer:
    """`python -m opsdesk.mcp_server` in a subprocess, spoken to one raw line at a time."""

    def __init__(self, env: dict[str, str]) -> None:
        """Start the server; its stderr goes to a temporary file (see ``log()``)."""
        self.stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (close() closes it)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "opsdesk.mcp_server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
        )
        self.lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.next_id = 1000

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):
            self.lines.put(line)

    def log(self) -> str:
        """The server's stderr so far (for failure messages)."""
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-4000:]

    def send(self, line: bytes) -> None:
        """Write ``line`` and a newline to the server's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()

    def receive(self, within: float = ANSWER_WITHIN) -> dict[str, Any] | None:
        """The next line the server writes, as JSON, or None if none comes ``within`` s."""
        try:
            line = self.lines.get(timeout=within)
        except queue.Empty:
            return None
        message: dict[str, Any] = json.loads(line)
        return message

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Send a well-formed request and return the next line if it is the answer, else None."""
        self.next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(json.dumps(message).encode())
        answer = self.receive()
        return answer if answer is not None and answer.get("id") == self.next_id else None

    def initialize(self) -> None:
        """The MCP handshake (the first answer may take as long as startup)."""
        self.send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-06-18",
                        "capabilities": {},
                        "clientInfo": {"name": "malformed-lines", "version": "1"},
                    },
                }
            ).encode()
        )
        answer = self.receive(within=STARTUP_WITHIN)
        assert answer is not None, f"no answer to initialize; server log:\n{self.log()}"
        assert "result" in answer, answer
        self.send(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')

    def close(self, within: float = 10.0) -> int:
        """Close stdin (the client leaves) and return the exit code."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=within)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.stderr.close()


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
    env = {
        **os.environ,
        "DATABASE_URL": e2e_docker_compose.database_url,
        "REDIS_URL": e2e_docker_compose.redis_url,
        "OPSDESK_SCHEMA": e2e_worker.schema,
        "OPSDESK_EVENT_PREFIX": e2e_worker.prefix,
    }
    server = StdioServer(env)
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
