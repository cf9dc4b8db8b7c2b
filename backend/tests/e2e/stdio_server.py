"""`python -m opsdesk.mcp_server` in a subprocess, spoken to in raw JSON-RPC lines."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from typing import IO, Any

from testbed.isolation.workers import Worker
from testbed.services import Endpoints

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
