"""Canvas tools: create, get, versioned save, JSON path query."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from opsdesk.app import App
from opsdesk.domains.canvas import service as canvas
from opsdesk.domains.canvas.models import CanvasDoc
from opsdesk.mcp_tools.registry import tool_registrar
from opsdesk.mcp_tools.types import (
    Id,
    IdempotencyKey,
    JsonObject,
    Limit,
    Name,
    NoNul,
    Version,
    dump,
)

JsonPath = Annotated[str, Field(min_length=1, max_length=1000, description="SQL/JSON path"), NoNul]


def register(server: MCPServer[Any], app: App) -> None:
    """Add the canvas tools to ``server``."""
    tool = tool_registrar(server)

    @tool(
        "Create a canvas document (a JSON object) at version 1. "
        "Strings and keys in it must not contain NUL (\\u0000)."
    )
    def canvas_create(
        name: Name, data: JsonObject | None = None, idempotency_key: IdempotencyKey = None
    ) -> dict[str, Any]:
        return app.create(
            model=CanvasDoc,
            key=idempotency_key,
            arguments={"name": name, "data": data or {}},
            make=lambda s: canvas.create_canvas(s, name=name, data=data or {}).id,
            load=lambda s, i: dump(canvas.get_canvas(s, canvas_id=i)),
        )

    @tool("Get a canvas document with its current version.")
    def canvas_get(canvas_id: Id) -> dict[str, Any]:
        return app.run(lambda s: dump(canvas.get_canvas(s, canvas_id=canvas_id)))

    @tool(
        "Replace a canvas's data. expected_version must be the version you read; "
        "if someone saved since, the call fails with Conflict and nothing changes. "
        "expected_version outside 1..2147483647 (a version that cannot exist) and NUL "
        "(\\u0000) in data are refused as invalid arguments, before any version check."
    )
    def canvas_save(canvas_id: Id, data: JsonObject, expected_version: Version) -> dict[str, Any]:
        return app.run(
            lambda s: dump(
                canvas.save_canvas(
                    s, canvas_id=canvas_id, data=data, expected_version=expected_version
                )
            )
        )

    @tool(
        "Canvas documents matching a PostgreSQL SQL/JSON path, "
        "e.g. '$.shapes[*] ? (@.kind == \"box\")'; variables are bound as $name."
    )
    def canvas_query(
        path: JsonPath, variables: JsonObject | None = None, limit: Limit = 50
    ) -> dict[str, Any]:
        return app.run(
            lambda s: {
                "results": [
                    dump(d)
                    for d in canvas.query_canvases(s, path=path, variables=variables, limit=limit)
                ]
            }
        )
