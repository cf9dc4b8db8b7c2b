"""Knowledge tools: create, get, ranked full-text search."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from opsdesk.app import App
from opsdesk.domains.knowledge import service as knowledge
from opsdesk.domains.knowledge.models import KnowledgeDoc
from opsdesk.mcp_tools.registry import tool_registrar
from opsdesk.mcp_tools.types import Id, IdempotencyKey, Limit, LongText, Query, Tag, Title, dump

Tags = Annotated[list[Tag], Field(max_length=20)]


def register(server: MCPServer[Any], app: App) -> None:
    """Add the knowledge tools to ``server``."""
    tool = tool_registrar(server)

    @tool("Create a knowledge-base document with tags.")
    def knowledge_create_doc(
        title: Title,
        body: LongText,
        tags: Tags | None = None,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        return app.create(
            model=KnowledgeDoc,
            key=idempotency_key,
            arguments={"title": title, "body": body, "tags": tags or []},
            make=lambda s: knowledge.create_doc(s, title=title, body=body, tags=tags or []).id,
            load=lambda s, i: dump(knowledge.get_doc(s, doc_id=i)),
        )

    @tool("Get a knowledge-base document by id.")
    def knowledge_get_doc(doc_id: Id) -> dict[str, Any]:
        return app.run(lambda s: dump(knowledge.get_doc(s, doc_id=doc_id)))

    @tool(
        'Full-text search (web-search syntax: words, "phrases", -exclude, or), '
        "best match first, optionally limited to documents carrying all given tags."
    )
    def knowledge_search(
        query: Query, tags: Tags | None = None, limit: Limit = 10
    ) -> dict[str, Any]:
        return app.run(
            lambda s: {
                "results": [
                    dump(hit.doc, rank=round(hit.rank, 6))
                    for hit in knowledge.search_docs(s, query=query, tags=tags or [], limit=limit)
                ]
            }
        )
