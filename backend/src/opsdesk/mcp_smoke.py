"""Stdio smoke check: an SDK client launches ``python -m opsdesk.mcp_server`` and calls tools.

Reusable by the E2E suite::

    from opsdesk.mcp_smoke import stdio_smoke
    report = anyio.run(stdio_smoke, database_url, redis_url)   # or await it in an anyio test
    assert report.tool_count >= 30 and not report.failures

Run by hand: ``python -m opsdesk.mcp_smoke`` with DATABASE_URL / REDIS_URL set. The server
uses schema ``OPSDESK_SCHEMA`` (default: a throwaway ``opsdesk_stdio_<pid>``, dropped after).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from opsdesk import db


@dataclass
class SmokeReport:
    """What the stdio client saw: tool names, per-call results and failures."""

    tools: list[str] = field(default_factory=list)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def tool_count(self) -> int:
        """Number of tools the server listed."""
        return len(self.tools)


async def stdio_smoke(
    database_url: str,
    redis_url: str | None = None,
    *,
    schema: str | None = None,
    prefix: str = "",
    python: str = sys.executable,
) -> SmokeReport:
    """Launch the stdio server, list tools and call one create tool per domain plus a rule."""
    env = {**os.environ, "DATABASE_URL": database_url, "OPSDESK_EVENT_PREFIX": prefix}
    if redis_url:
        env["REDIS_URL"] = redis_url
    if schema:
        env["OPSDESK_SCHEMA"] = schema
    params = StdioServerParameters(command=python, args=["-m", "opsdesk.mcp_server"], env=env)
    report = SmokeReport()
    tag = uuid.uuid4().hex[:8]
    async with Client(params, read_timeout_seconds=30) as client:
        report.tools = sorted(t.name for t in (await client.list_tools()).tools)

        async def call(name: str, args: dict[str, Any], *, expect_error: bool = False) -> Any:
            result = await client.call_tool(name, args)
            text = result.content[0].text if result.content else ""  # type: ignore[union-attr]
            if result.is_error != expect_error:
                report.failures.append(f"{name}: is_error={result.is_error}: {text}")
            data = result.structured_content or ({} if result.is_error else json.loads(text))
            report.calls[name] = data if not result.is_error else {"error": text}
            return data

        contact = {"email": f"smoke-{tag}@example.com", "name": "Smoke"}
        if redis_url:
            contact["idempotency_key"] = f"smoke-{tag}"
        first = await call("crm_create_contact", contact)
        if redis_url:  # a retried create returns the same contact and creates nothing
            again = await client.call_tool("crm_create_contact", contact)
            replay = again.structured_content or {}
            if replay.get("id") != first.get("id") or replay.get("idempotent_replay") is not True:
                report.failures.append(f"idempotent retry gave {replay}, first call {first}")
        await call("tasks_create_task", {"title": "smoke task", "priority": "high"})
        ticket = await call("tickets_create_ticket",
                            {"subject": "smoke", "requester_email": "s@example.com"})  # fmt: skip
        await call("tickets_transition", {"ticket_id": ticket.get("id", 1), "status": "closed"},
                   expect_error=True)  # fmt: skip
        await call("knowledge_create_doc", {"title": "Smoke doc", "body": "smoke testing words"})
        await call("knowledge_search", {"query": "smoke"})
        await call("canvas_create", {"name": "smoke", "data": {"n": 1}})
        cash = await call("finance_create_account",
                          {"code": f"S{tag}", "name": "Cash", "type": "asset"})  # fmt: skip
        await call("finance_get_account", {"account_id": cash.get("id", 1)})
        await call("crm_create_deal", {"title": "x", "amount": "-1"}, expect_error=True)
    return report


def main() -> int:
    """Entry point: ``python -m opsdesk.mcp_smoke``."""
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        print('set DATABASE_URL (and REDIS_URL), e.g. eval "$(make -s env)"', file=sys.stderr)
        return 2
    schema = os.environ.get("OPSDESK_SCHEMA") or f"opsdesk_stdio_{os.getpid()}"
    try:
        report = anyio.run(
            lambda: stdio_smoke(database_url, os.environ.get("REDIS_URL"), schema=schema)
        )
    finally:
        if "OPSDESK_SCHEMA" not in os.environ:
            engine = db.make_engine(database_url)
            db.drop_schema(engine, schema)
            engine.dispose()
    print(f"{report.tool_count} tools: {', '.join(report.tools)}")
    for name, data in report.calls.items():
        print(f"  {name}: {str(data)[:100]}")
    for failure in report.failures:
        print(f"FAIL {failure}", file=sys.stderr)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
