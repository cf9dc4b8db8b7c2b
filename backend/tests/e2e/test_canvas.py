"""Canvas through MCP: JSONB documents, optimistic versioning, SQL/JSON path queries."""

from __future__ import annotations

import threading

import pytest
from mcp import ClientSession
from mcp_calls import call, call_error, is_invalid
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from opsdesk.db import make_session_factory
from opsdesk.domains.canvas import service as canvas
from opsdesk.domains.canvas.models import CanvasDoc
from opsdesk.errors import Conflict
from testbed.isolation.pubsub import EventListener


async def test_create_get_and_save_bumps_version(
    mcp_service: ClientSession, e2e_session: Session, e2e_events: EventListener
) -> None:
    with e2e_events.subscribe("canvas") as sub:
        doc = await call(mcp_service, "canvas_create", name="Board", data={"shapes": []})
        assert sub.next()["type"] == "canvas.canvas.created"
        saved = await call(
            mcp_service,
            "canvas_save",
            canvas_id=doc["id"],
            data={"shapes": [{"kind": "box"}]},
            expected_version=1,
        )
        event = sub.next()
    assert doc["version"] == 1
    assert saved["version"] == 2
    assert event["type"] == "canvas.canvas.saved"
    assert event["data"]["version"] == 2
    row = e2e_session.get(CanvasDoc, doc["id"], populate_existing=True)
    assert row is not None
    assert row.data == {"shapes": [{"kind": "box"}]}
    got = await call(mcp_service, "canvas_get", canvas_id=doc["id"])
    assert got["version"] == 2


async def test_stale_save_is_a_conflict_and_changes_nothing(
    mcp_service: ClientSession,
    e2e_session: Session,
    e2e_events: EventListener,
    canvas_data_factory: object,
) -> None:
    doc = canvas_data_factory.create()  # type: ignore[attr-defined]
    original = dict(doc.data)
    await call(mcp_service, "canvas_save", canvas_id=doc.id, data={"v": 2}, expected_version=1)
    with e2e_events.subscribe("canvas") as sub:
        message = await call_error(
            mcp_service, "canvas_save", canvas_id=doc.id, data={"v": "stale"}, expected_version=1
        )
        assert sub.drain() == []
    assert "Conflict" in message
    assert "version 2" in message
    row = e2e_session.get(CanvasDoc, doc.id, populate_existing=True)
    assert row is not None
    assert row.data == {"v": 2}
    assert row.version == 2
    assert row.data != original


async def test_save_of_missing_canvas_is_not_found(mcp_service: ClientSession) -> None:
    assert "NotFound" in await call_error(
        mcp_service, "canvas_save", canvas_id=8_888, data={}, expected_version=1
    )


@pytest.mark.parametrize("data", [[1, 2], "text", 3])
async def test_data_must_be_a_json_object(mcp_service: ClientSession, data: object) -> None:
    assert is_invalid(await call_error(mcp_service, "canvas_create", name="Bad", data=data))


async def test_query_by_json_path_with_variables(
    mcp_service: ClientSession, canvas_data_factory: object
) -> None:
    box = canvas_data_factory.create(  # type: ignore[attr-defined]
        data={"shapes": [{"kind": "box", "x": 500}]}
    )
    canvas_data_factory.create(data={"shapes": [{"kind": "box", "x": 5}]})  # type: ignore[attr-defined]
    canvas_data_factory.create(data={"shapes": [{"kind": "circle", "x": 900}]})  # type: ignore[attr-defined]
    out = await call(
        mcp_service,
        "canvas_query",
        path="$.shapes[*] ? (@.kind == $kind && @.x > $min)",
        variables={"kind": "box", "min": 100},
    )
    assert [d["id"] for d in out["results"]] == [box.id]


async def test_malformed_json_path_is_refused(mcp_service: ClientSession) -> None:
    assert is_invalid(await call_error(mcp_service, "canvas_query", path="$.shapes[[["))


@pytest.mark.committed
def test_concurrent_saves_exactly_one_wins(e2e_engine: Engine, canvas_data_factory: object) -> None:
    # Real commits and two connections: the compare-and-set must pick one writer.
    doc = canvas_data_factory.create()  # type: ignore[attr-defined]
    sessions = make_session_factory(e2e_engine)
    barrier = threading.Barrier(2)
    results: list[str] = []

    def writer(name: str) -> None:
        with sessions() as session:
            barrier.wait()
            try:
                canvas.save_canvas(session, canvas_id=doc.id, data={"by": name}, expected_version=1)
                results.append("won")
            except Conflict:
                results.append("conflict")

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == ["conflict", "won"]
    with sessions() as session:
        row = session.get(CanvasDoc, doc.id)
        assert row is not None
        assert row.version == 2
