"""`python -m opsdesk.mcp_server` in a subprocess, spoken to in raw JSON-RPC lines, or by the
MCP SDK's own client over the same pipes (``pipe_transport``): one server per worker serves
every stdio test, since starting one (Python, the SDK, the app) costs more than the tests."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO, TYPE_CHECKING, Any

import anyio

from testbed.isolation.workers import Worker
from testbed.services.endpoints import Endpoints

if TYPE_CHECKING:
    from mcp.client._transport import TransportStreams

ANSWER_WITHIN = 1.0  # seconds: what a client may wait for any answer
STARTUP_WITHIN = 60.0  # seconds: imports and the schema check, on a loaded machine


def server_env(endpoints: Endpoints, worker: Worker, **extra: str) -> dict[str, str]:
    """The environment for a server in ``worker``'s schema and Valkey namespace."""
    return {
        **os.environ,
        "DATABASE_URL": endpoints.database_url,
        "REDIS_URL": endpoints.redis_url,
        "OPSDESK_SCHEMA": worker.schema,
        "OPSDESK_EVENT_PREFIX": worker.prefix,
        **extra,
    }


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
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()
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

    def request(
        self, method: str, params: dict[str, Any] | None = None, within: float = ANSWER_WITHIN
    ) -> dict[str, Any] | None:
        """Send a well-formed request and return the next line if it is the answer, else None."""
        self.next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(json.dumps(message).encode())
        answer = self.receive(within)
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

    def drain(self) -> None:
        """Drop lines nobody read yet (a previous user's late notifications)."""
        while True:
            try:
                self.lines.get_nowait()
            except queue.Empty:
                return

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
            self.pump.join(timeout=5)  # it ends at the pipe's end of file
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.stderr.close()


@asynccontextmanager
async def pipe_transport(server: StdioServer) -> AsyncIterator[TransportStreams]:
    """The SDK client's transport over ``server``'s pipes, as ``mcp``'s stdio_client speaks
    them (one JSON message a line), without starting a process of its own or ending it."""
    from mcp import types
    from mcp.shared.message import SessionMessage

    server.drain()
    to_client, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](16)
    write_stream, from_client = anyio.create_memory_object_stream[SessionMessage](16)

    def next_line() -> bytes | None:
        try:
            return server.lines.get(timeout=0.05)  # short: lets the task see its cancellation
        except queue.Empty:
            return None

    async def reader() -> None:
        while True:
            line = await anyio.to_thread.run_sync(next_line)
            if line is None:
                continue
            try:
                message = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
            except ValueError as exc:
                await to_client.send(exc)
                continue
            await to_client.send(SessionMessage(message))

    async def writer() -> None:
        async for sent in from_client:
            server.send(sent.message.model_dump_json(by_alias=True, exclude_unset=True).encode())

    # The streams are closed on the way out, after the tasks end.
    async with (
        to_client,
        read_stream,
        write_stream,
        from_client,
        anyio.create_task_group() as tasks,
    ):
        tasks.start_soon(reader)
        tasks.start_soon(writer)
        try:
            yield read_stream, write_stream
        finally:
            tasks.cancel_scope.cancel()
