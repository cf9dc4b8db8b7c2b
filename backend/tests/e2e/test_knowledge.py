"""Knowledge through MCP: documents with normalized tags, full-text search with ranking."""

from __future__ import annotations

from mcp import ClientSession
from mcp_calls import call, call_error, is_invalid
from sqlalchemy import text
from sqlalchemy.orm import Session

from opsdesk.domains.knowledge.models import KnowledgeDoc
from testbed.isolation.pubsub import EventListener


async def test_create_doc_normalizes_tags_and_fills_the_search_vector(
    mcp_service: ClientSession, e2e_session: Session, e2e_events: EventListener
) -> None:
    with e2e_events.subscribe("knowledge") as sub:
        out = await call(
            mcp_service,
            "knowledge_create_doc",
            title="Resetting passwords",
            body="How to reset a password safely.",
            tags=["HowTo", " howto ", "auth"],
        )
        event = sub.next()
    assert out["tags"] == ["howto", "auth"]
    assert event["type"] == "knowledge.doc.created"
    assert event["data"]["tags"] == ["howto", "auth"]
    vector = e2e_session.execute(
        text("SELECT search_vector::text FROM knowledge_docs WHERE id = :id"), {"id": out["id"]}
    ).scalar_one()
    assert "'password':" in vector
    assert "'reset':" in vector
    got = await call(mcp_service, "knowledge_get_doc", doc_id=out["id"])
    assert got["title"] == "Resetting passwords"


async def test_malformed_tag_is_refused(mcp_service: ClientSession, e2e_session: Session) -> None:
    message = await call_error(
        mcp_service, "knowledge_create_doc", title="T", body="B", tags=["has space"]
    )
    assert is_invalid(message)
    assert e2e_session.query(KnowledgeDoc).count() == 0


async def test_too_many_tags_are_refused(mcp_service: ClientSession) -> None:
    tags = [f"t{i}" for i in range(21)]
    assert is_invalid(
        await call_error(mcp_service, "knowledge_create_doc", title="T", body="B", tags=tags)
    )


async def test_get_missing_doc_is_not_found(mcp_service: ClientSession) -> None:
    assert "NotFound" in await call_error(mcp_service, "knowledge_get_doc", doc_id=12_345)


async def test_search_ranks_title_matches_first(
    mcp_service: ClientSession, knowledge_doc_factory: object
) -> None:
    factory = knowledge_doc_factory
    factory.create_batch(20)  # type: ignore[attr-defined]  # noise
    in_body = factory.create(  # type: ignore[attr-defined]
        title="Office notes", body="The kubernetes cluster restarts nightly."
    )
    in_title = factory.create(  # type: ignore[attr-defined]
        title="Kubernetes upgrade guide", body="Steps for the cluster upgrade."
    )
    out = await call(mcp_service, "knowledge_search", query="kubernetes")
    ids = [d["id"] for d in out["results"]]
    assert ids == [in_title.id, in_body.id]  # title weighs A, body B
    ranks = [d["rank"] for d in out["results"]]
    assert ranks == sorted(ranks, reverse=True)


async def test_search_stems_and_supports_web_syntax(
    mcp_service: ClientSession, knowledge_doc_factory: object
) -> None:
    running = knowledge_doc_factory.create(  # type: ignore[attr-defined]
        title="Running backups", body="Backups run hourly."
    )
    knowledge_doc_factory.create(  # type: ignore[attr-defined]
        title="Running restores", body="Restores are manual."
    )
    out = await call(mcp_service, "knowledge_search", query="run backup -restores")
    assert [d["id"] for d in out["results"]] == [running.id]


async def test_search_filters_by_all_given_tags(
    mcp_service: ClientSession, knowledge_doc_factory: object
) -> None:
    both = knowledge_doc_factory.create(  # type: ignore[attr-defined]
        title="VPN setup", body="Configure the vpn client.", tags=["network", "howto"]
    )
    knowledge_doc_factory.create(  # type: ignore[attr-defined]
        title="VPN outage", body="The vpn was down.", tags=["network"]
    )
    out = await call(mcp_service, "knowledge_search", query="vpn", tags=["Network", "howto"])
    assert [d["id"] for d in out["results"]] == [both.id]


async def test_search_without_matches_is_empty_and_blank_query_refused(
    mcp_service: ClientSession, knowledge_doc_factory: object
) -> None:
    knowledge_doc_factory.create_batch(3)  # type: ignore[attr-defined]
    out = await call(mcp_service, "knowledge_search", query="xylophonequartz")
    assert out["results"] == []
    assert is_invalid(await call_error(mcp_service, "knowledge_search", query="   "))
