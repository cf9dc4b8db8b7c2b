"""opsdesk as an MCP tool service (the ``mcp`` SDK's MCPServer), in-process or over stdio.

Tools (``<domain>_<verb>``): create/get/search for every domain, plus ``crm_move_deal``,
``tickets_transition``, ``canvas_save`` (with ``expected_version``),
``finance_post_transaction``, ``finance_create_invoice`` and ``knowledge_search``. Arguments
are validated by pydantic from the type hints; a bad argument, a broken rule or an unexpected
database error comes back as a tool result with ``isError=true`` and a message starting with
the error kind (``InvalidArgument:``, ``NotFound:``, ``Conflict:``, ``RuleViolation:``,
``InternalError:``), never as a crash. Create tools take an optional ``idempotency_key``: a
retry returns the same object with ``"idempotent_replay": true`` (see ``opsdesk.idempotency``:
recorded in PostgreSQL with the object, a short Valkey lease while the first call runs).

In-process (tests), over a Session the test owns and the server never closes::

    from mcp import Client
    from opsdesk.app import App
    from opsdesk.mcp_server import build_server

    app = App.for_session(session, redis=redis_client, prefix=worker_prefix)
    async with Client(build_server(app)) as client:
        result = await client.call_tool("crm_create_contact", {"email": "a@b.co", "name": "A"})
        assert not result.is_error and result.structured_content["id"] > 0

(``App.for_engine(engine, ...)`` gives every call its own Session instead.)

Over stdio: ``python -m opsdesk.mcp_server`` with ``DATABASE_URL`` (required), ``REDIS_URL``
(events and idempotency leases; optional), ``OPSDESK_SCHEMA`` (optional; tables go there) and
``OPSDESK_EVENT_PREFIX`` (optional channel/key prefix) and ``OPSDESK_VALKEY_TIMEOUT`` (seconds
a Valkey command may take, default 5). Tables are created if missing. Logs go to stderr;
stdout carries the protocol; every malformed line is answered (see ``opsdesk.stdio``).
"""

from __future__ import annotations

import gc

if __name__ == "__main__":
    # A server process: the imports below (the MCP SDK's models, SQLAlchemy) make objects that
    # live as long as it does, so the collector would only walk them again and again while they
    # load. main() collects once and freezes them before serving.
    gc.disable()

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer

from opsdesk import db
from opsdesk.app import App
from opsdesk.mcp_tools import canvas, crm, finance, knowledge, tasks, tickets
from opsdesk.stdio import serve_stdio

SERVER_NAME = "opsdesk"
DEFAULT_VALKEY_TIMEOUT = 5.0
INSTRUCTIONS = (
    "opsdesk: CRM, tasks, support tickets, knowledge base, canvas documents and a "
    "double-entry ledger. Money is exchanged as decimal strings. Pass idempotency_key to "
    "create tools when you may retry."
)


def build_server(app: App) -> MCPServer[Any]:
    """Return an MCPServer exposing every opsdesk tool over ``app``."""
    server: MCPServer[Any] = MCPServer(SERVER_NAME, instructions=INSTRUCTIONS, log_level="WARNING")
    for module in (crm, tasks, tickets, knowledge, canvas, finance):
        module.register(server, app)
    return server


def valkey_timeout(env: Mapping[str, str]) -> float:
    """Seconds a Valkey command may take (OPSDESK_VALKEY_TIMEOUT, default 5)."""
    raw = env.get("OPSDESK_VALKEY_TIMEOUT", "").strip() or str(DEFAULT_VALKEY_TIMEOUT)
    try:
        timeout = float(raw)
    except ValueError:
        timeout = 0.0
    if not 0 < timeout <= 600:
        raise SystemExit(
            f"opsdesk.mcp_server: OPSDESK_VALKEY_TIMEOUT={raw!r} is not a number of seconds "
            "between 0 and 600; unset it for the default of 5"
        )
    return timeout


def app_from_env(env: Mapping[str, str]) -> App:
    """Build the App from DATABASE_URL, REDIS_URL and the OPSDESK_* variables."""
    database_url = env.get("DATABASE_URL", "").strip()
    if not database_url:
        raise SystemExit(
            "opsdesk.mcp_server: DATABASE_URL is not set. Set it to a PostgreSQL URL, e.g. "
            'eval "$(make -s env)" for the E2E services, then run python -m opsdesk.mcp_server'
        )
    schema = env.get("OPSDESK_SCHEMA") or None
    engine = db.make_engine(database_url, schema=schema)
    if schema is not None:
        db.create_schema(engine, schema)
    else:
        db.create_tables(engine)
    redis_client = None
    if redis_url := env.get("REDIS_URL", "").strip():
        import redis

        timeout = valkey_timeout(env)
        # Bounded, so a Valkey that stops answering costs one timeout per command, not a hang.
        redis_client = redis.Redis.from_url(
            redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    else:
        logging.getLogger("opsdesk.mcp").warning(
            "REDIS_URL is not set: events are not published and idempotency keys are refused"
        )
    return App.for_engine(engine, redis=redis_client, prefix=env.get("OPSDESK_EVENT_PREFIX", ""))


def main() -> None:
    """Serve the opsdesk tools over stdio (``python -m opsdesk.mcp_server``)."""
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(message)s"
    )
    server = build_server(app_from_env(os.environ))
    # What start-up built lives until exit: later collections need not walk it.
    gc.collect()
    gc.freeze()
    gc.enable()
    anyio.run(serve_stdio, server)


if __name__ == "__main__":
    main()
