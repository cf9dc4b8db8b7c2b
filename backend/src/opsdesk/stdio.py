"""MCP over stdio that answers every line, as JSON-RPC 2.0 requires.

The SDK's stdio transport (``mcp.server.stdio.stdio_server``) decodes stdin with
``errors="replace"`` and hands a line that fails validation to the session as an exception,
which the session only logs: a client that sent a malformed line, or a request whose ``id`` is
a float, a boolean or an object (the SDK then reads it as a notification), waits forever for
an answer. This transport reads the raw bytes itself and checks each line before the server
sees it:

* not UTF-8, not JSON, nested deeper than the parser allows: ``-32700 Parse error``;
* valid JSON but not one JSON-RPC 2.0 object (an array, i.e. a batch, which MCP does not
  support; a number; an id that is not a string or an integer; a missing or malformed
  field): ``-32600 Invalid Request``;
* a line longer than ``MAX_LINE_BYTES``: ``-32600``, and the rest of the line is skipped.

The answer's ``id`` is null unless the line carried a usable one, which is then echoed so the
caller waiting on it is released. Blank lines are ignored. The server goes on serving. While
it serves, fd 0 reads /dev/null and fd 1 writes to stderr, so stray output from the process or
its children cannot corrupt the protocol (the SDK's transport does the same).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, BinaryIO

import anyio
import anyio.to_thread
import mcp_types as types
import pydantic_core
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.mcpserver import MCPServer
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

MAX_LINE_BYTES = 16 * 1024 * 1024
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
_HOW = "send one JSON-RPC 2.0 object per line, UTF-8 encoded"


def _error(code: int, detail: str, request_id: Any = None) -> types.JSONRPCError:
    title = "Parse error" if code == PARSE_ERROR else "Invalid Request"
    return types.JSONRPCError(
        jsonrpc="2.0",
        id=request_id,
        error=types.ErrorData(code=code, message=f"{title}: {detail}; {_HOW}"),
    )


def _usable_id(value: Any) -> bool:
    # MCP request ids are strings or integers (JSON-RPC's null and fractions are not allowed).
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _first_problem(exc: ValidationError) -> str:
    problem = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in problem["loc"])
    return f"{where}: {problem['msg']}" if where else problem["msg"]


def check_line(raw: bytes) -> types.JSONRPCMessage | types.JSONRPCError | None:
    """Return the message a line holds, the error to answer it with, or None if it is blank."""
    text = raw.strip()
    if not text:
        return None
    try:
        value = pydantic_core.from_json(text, allow_inf_nan=False)
    except ValueError as exc:
        return _error(PARSE_ERROR, f"the line is not valid UTF-8 JSON ({exc})")
    if isinstance(value, list):
        return _error(INVALID_REQUEST, "a JSON array (a batch) is not supported by MCP")
    if not isinstance(value, dict):
        return _error(INVALID_REQUEST, f"expected a JSON object, got {type(value).__name__}")
    if "id" in value and not _usable_id(value["id"]):
        return _error(INVALID_REQUEST, "id must be a string or an integer")
    try:
        message: types.JSONRPCMessage = types.jsonrpc_message_adapter.validate_python(
            value, by_name=False
        )
    except ValidationError as exc:
        return _error(INVALID_REQUEST, _first_problem(exc), value.get("id"))
    return message


async def _read_line(source: BinaryIO) -> tuple[bytes, bool] | None:
    """Return (line, too_long) or None at end of input; a too long line is read to its end."""
    line: bytes = await anyio.to_thread.run_sync(
        source.readline, MAX_LINE_BYTES + 1, abandon_on_cancel=True
    )
    if not line:
        return None
    if len(line) <= MAX_LINE_BYTES:
        return line, False
    while line and not line.endswith(b"\n"):  # skip the rest, a bounded piece at a time
        line = await anyio.to_thread.run_sync(
            source.readline, MAX_LINE_BYTES, abandon_on_cancel=True
        )
    return b"", True


async def _read(
    source: BinaryIO,
    inbound: MemoryObjectSendStream[SessionMessage | Exception],
    answers: MemoryObjectSendStream[SessionMessage],
) -> None:
    async with inbound, answers:
        while (read := await _read_line(source)) is not None:
            line, too_long = read
            if too_long:
                limit = f"the line is longer than {MAX_LINE_BYTES} bytes"
                await answers.send(SessionMessage(_error(INVALID_REQUEST, limit)))
                continue
            checked = check_line(line)
            if isinstance(checked, types.JSONRPCError):
                await answers.send(SessionMessage(checked))
            elif checked is not None:
                await inbound.send(SessionMessage(checked))


async def _write(sink: BinaryIO, outbound: MemoryObjectReceiveStream[SessionMessage]) -> None:
    async with outbound:
        async for session_message in outbound:
            data = session_message.message.model_dump_json(by_alias=True, exclude_unset=True)
            await anyio.to_thread.run_sync(_write_line, sink, data.encode() + b"\n")


def _write_line(sink: BinaryIO, data: bytes) -> None:
    sink.write(data)
    sink.flush()


@asynccontextmanager
async def stdio_streams(
    source: BinaryIO, sink: BinaryIO
) -> AsyncIterator[
    tuple[
        MemoryObjectReceiveStream[SessionMessage | Exception],
        MemoryObjectSendStream[SessionMessage],
    ]
]:
    """Yield (read_stream, write_stream) for an MCP server over binary ``source`` and ``sink``.

    Malformed lines are answered here and never reach the server; its replies and those
    answers go out through one writer, a whole line at a time. On exit, reading stops and
    everything already sent is written.
    """
    inbound, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, outbound = anyio.create_memory_object_stream[SessionMessage](0)
    async with anyio.create_task_group() as writers:
        writers.start_soon(_write, sink, outbound)
        try:
            async with anyio.create_task_group() as readers:
                readers.start_soon(_read, source, inbound, write_stream.clone())
                try:
                    yield read_stream, write_stream
                finally:
                    readers.cancel_scope.cancel()  # done at end of input; else stop reading
        finally:
            write_stream.close()  # the writer drains what was sent, then ends


@contextmanager
def claimed_stdio() -> Iterator[tuple[BinaryIO, BinaryIO]]:
    """Yield private copies of fd 0 and 1 for the protocol; meanwhile fd 0 reads /dev/null
    and fd 1 writes to stderr. Both are restored afterwards."""
    wire_in, wire_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(devnull, 0)
        os.dup2(2, 1)
        # Never closed: a reader thread may still block on wire_in after we return, and a
        # closed descriptor could be reused under it.
        yield os.fdopen(wire_in, "rb", closefd=False), os.fdopen(wire_out, "wb", closefd=False)
    finally:
        os.dup2(wire_out, 1)
        os.dup2(wire_in, 0)
        os.close(devnull)


async def serve_stdio(server: MCPServer[Any]) -> None:
    """Serve ``server`` over this process's stdin and stdout until stdin ends."""
    # MCPServer.run("stdio") is hard-wired to the SDK's transport; run its low-level server
    # on ours instead, exactly as MCPServer.run_stdio_async does.
    lowlevel = server._lowlevel_server
    with claimed_stdio() as (source, sink):
        async with stdio_streams(source, sink) as (read_stream, write_stream):
            await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
