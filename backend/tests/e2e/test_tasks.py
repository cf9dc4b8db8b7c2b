"""Tasks through MCP: creation, status with completed_at, comments, search, overdue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from mcp import ClientSession
from mcp_calls import call, call_error, is_invalid
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from opsdesk.domains.tasks.models import Task, TaskComment
from testbed.isolation.pubsub import EventListener


def _iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


async def test_create_and_get_task(
    mcp_service: ClientSession, e2e_session: Session, e2e_events: EventListener
) -> None:
    with e2e_events.subscribe("tasks") as sub:
        out = await call(
            mcp_service,
            "tasks_create_task",
            title="Write report",
            priority="high",
            assignee="ada",
            due_at=_iso(timedelta(days=1)),
        )
        event = sub.next()
    assert event["type"] == "tasks.task.created"
    assert event["data"]["assignee"] == "ada"
    row = e2e_session.get(Task, out["id"])
    assert row is not None
    assert (row.status, row.priority) == ("todo", "high")
    got = await call(mcp_service, "tasks_get_task", task_id=out["id"])
    assert got["comments"] == []


async def test_due_at_needs_a_timezone(mcp_service: ClientSession, e2e_session: Session) -> None:
    message = await call_error(
        mcp_service, "tasks_create_task", title="Naive", due_at="2030-01-31T17:00:00"
    )
    assert is_invalid(message)
    assert e2e_session.scalar(select(func.count()).select_from(Task)) == 0


async def test_unknown_priority_is_refused(mcp_service: ClientSession) -> None:
    assert is_invalid(
        await call_error(mcp_service, "tasks_create_task", title="T", priority="whenever")
    )


async def test_done_stamps_completed_at_and_reopening_clears_it(
    mcp_service: ClientSession,
    e2e_session: Session,
    e2e_events: EventListener,
    task_factory: object,
) -> None:
    task = task_factory.create()  # type: ignore[attr-defined]
    with e2e_events.subscribe("tasks") as sub:
        done = await call(mcp_service, "tasks_set_status", task_id=task.id, status="done")
        assert sub.next()["data"] == {"previous": "todo", "status": "done"}
        assert done["completed_at"] is not None
        again = await call(mcp_service, "tasks_set_status", task_id=task.id, status="in_progress")
        assert sub.next()["data"]["previous"] == "done"
    assert again["completed_at"] is None
    e2e_session.refresh(task)
    assert task.status == "in_progress"
    assert task.completed_at is None


async def test_set_status_of_missing_task_is_not_found(mcp_service: ClientSession) -> None:
    assert "NotFound" in await call_error(
        mcp_service, "tasks_set_status", task_id=77_777, status="done"
    )


async def test_comments_are_added_in_order(
    mcp_service: ClientSession,
    e2e_session: Session,
    e2e_events: EventListener,
    task_factory: object,
) -> None:
    task = task_factory.create()  # type: ignore[attr-defined]
    with e2e_events.subscribe("tasks") as sub:
        for body in ("first", "second"):
            await call(mcp_service, "tasks_add_comment", task_id=task.id, author="bob", body=body)
            assert sub.next()["type"] == "tasks.comment.added"
    got = await call(mcp_service, "tasks_get_task", task_id=task.id)
    assert [c["body"] for c in got["comments"]] == ["first", "second"]
    count = e2e_session.scalar(select(func.count()).where(TaskComment.task_id == task.id))
    assert count == 2


async def test_comment_on_missing_task_is_not_found(
    mcp_service: ClientSession, e2e_events: EventListener
) -> None:
    with e2e_events.subscribe("tasks") as sub:
        message = await call_error(
            mcp_service, "tasks_add_comment", task_id=55_555, author="bob", body="hello"
        )
        assert sub.drain() == []
    assert "NotFound" in message


async def test_blank_comment_is_refused(mcp_service: ClientSession, task_factory: object) -> None:
    task = task_factory.create()  # type: ignore[attr-defined]
    assert is_invalid(
        await call_error(
            mcp_service, "tasks_add_comment", task_id=task.id, author="bob", body="   "
        )
    )


async def test_search_tasks_by_text_status_and_assignee(
    mcp_service: ClientSession, task_factory: object
) -> None:
    task_factory.create_batch(6, assignee="someone")  # type: ignore[attr-defined]
    mine = task_factory.create(title="Quarterly zebra audit", assignee="me")  # type: ignore[attr-defined]
    task_factory.create(status="done", assignee="me")  # type: ignore[attr-defined]
    found = await call(mcp_service, "tasks_search_tasks", query="ZEBRA")
    assert [t["id"] for t in found["results"]] == [mine.id]
    todo_mine = await call(mcp_service, "tasks_search_tasks", status="todo", assignee="me")
    assert [t["id"] for t in todo_mine["results"]] == [mine.id]


async def test_overdue_excludes_done_and_future_tasks(
    mcp_service: ClientSession, task_factory: object
) -> None:
    now = datetime.now(UTC)
    late = task_factory.create(due_at=now - timedelta(days=2))  # type: ignore[attr-defined]
    later = task_factory.create(due_at=now - timedelta(hours=1))  # type: ignore[attr-defined]
    task_factory.create(due_at=now - timedelta(days=3), status="done")  # type: ignore[attr-defined]
    task_factory.create(due_at=now + timedelta(days=1))  # type: ignore[attr-defined]
    task_factory.create(due_at=None)  # type: ignore[attr-defined]
    out = await call(mcp_service, "tasks_overdue")
    assert [t["id"] for t in out["results"]] == [late.id, later.id]  # most overdue first


@pytest.mark.parametrize("assignee", ["ann", "ben"])
async def test_overdue_filters_by_assignee(
    mcp_service: ClientSession, task_factory: object, assignee: str
) -> None:
    past = datetime.now(UTC) - timedelta(days=1)
    task_factory.create_batch(2, due_at=past, assignee="ann")  # type: ignore[attr-defined]
    task_factory.create_batch(3, due_at=past, assignee="ben")  # type: ignore[attr-defined]
    out = await call(mcp_service, "tasks_overdue", assignee=assignee)
    assert {t["assignee"] for t in out["results"]} == {assignee}
    assert len(out["results"]) == {"ann": 2, "ben": 3}[assignee]
