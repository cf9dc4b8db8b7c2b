"""Task rules: valid status/priority, aware due times, an overdue query, comments."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from opsdesk import events
from opsdesk.db import utcnow
from opsdesk.domains.tasks.models import Priority, Task, TaskComment, TaskStatus
from opsdesk.errors import InvalidArgument
from opsdesk.text_filters import contains_text
from opsdesk.unit_of_work import (
    get_or_raise,
    require_choice,
    require_no_nul,
    require_text,
    unit_of_work,
)


def require_aware(value: datetime | None, *, field: str) -> datetime | None:
    """Return ``value`` if it is None or timezone-aware, else raise InvalidArgument."""
    if value is not None and value.utcoffset() is None:
        raise InvalidArgument(f"{field} must include a timezone, e.g. 2030-01-31T17:00:00+00:00")
    return value


def create_task(
    session: Session,
    *,
    title: str,
    description: str = "",
    priority: str = Priority.NORMAL,
    assignee: str | None = None,
    due_at: datetime | None = None,
) -> Task:
    """Create a task in status todo."""
    task = Task(
        title=require_text(title, field="title", max_length=200),
        description=require_no_nul(description, field="description"),
        priority=require_choice(priority, Priority, field="priority"),
        status=TaskStatus.TODO.value,
        assignee=require_no_nul(assignee, field="assignee"),
        due_at=require_aware(due_at, field="due_at"),
    )
    with unit_of_work(session, what=f"task {title!r}"):
        session.add(task)
        session.flush()
        events.record(
            session, "tasks", "task.created", task.id, title=task.title, assignee=assignee
        )
    return task


def get_task(session: Session, *, task_id: int) -> Task:
    """Return a task or raise NotFound."""
    return get_or_raise(session, Task, task_id, what="task")


def search_tasks(
    session: Session,
    *,
    query: str = "",
    status: str | None = None,
    assignee: str | None = None,
    limit: int = 50,
) -> list[Task]:
    """Return tasks matching the filters, oldest first."""
    require_no_nul(assignee, field="assignee")
    stmt = (
        select(Task)
        .where(contains_text(query, Task.title, Task.description))
        .order_by(Task.id)
        .limit(limit)
    )
    if status is not None:
        stmt = stmt.where(Task.status == require_choice(status, TaskStatus, field="status"))
    if assignee is not None:
        stmt = stmt.where(Task.assignee == assignee)
    return list(session.scalars(stmt))


def set_status(session: Session, *, task_id: int, status: str) -> Task:
    """Change a task's status; done stamps completed_at, leaving done clears it."""
    require_choice(status, TaskStatus, field="status")
    with unit_of_work(session, what=f"task {task_id}"):
        task = get_or_raise(session, Task, task_id, what="task", lock=True)
        previous = task.status
        task.status = status
        task.completed_at = utcnow() if status == TaskStatus.DONE else None
        events.record(
            session, "tasks", "task.status_changed", task.id, previous=previous, status=status
        )
    return task


def assign_task(session: Session, *, task_id: int, assignee: str | None) -> Task:
    """Assign a task to someone (None unassigns)."""
    require_no_nul(assignee, field="assignee")
    with unit_of_work(session, what=f"task {task_id}"):
        task = get_or_raise(session, Task, task_id, what="task", lock=True)
        task.assignee = assignee
        events.record(session, "tasks", "task.assigned", task.id, assignee=assignee)
    return task


def add_comment(session: Session, *, task_id: int, author: str, body: str) -> TaskComment:
    """Add a comment to a task."""
    comment = TaskComment(
        task_id=task_id,
        author=require_text(author, field="author", max_length=200),
        body=require_text(body, field="body", max_length=10_000),
    )
    with unit_of_work(session, what=f"comment on task {task_id}"):
        get_or_raise(session, Task, task_id, what="task")
        session.add(comment)
        session.flush()
        events.record(session, "tasks", "comment.added", comment.id, task_id=task_id)
    return comment


def overdue_tasks(
    session: Session, *, now: datetime | None = None, assignee: str | None = None
) -> list[Task]:
    """Return tasks not done whose due time is before ``now``, most overdue first."""
    require_no_nul(assignee, field="assignee")
    cutoff = require_aware(now, field="now") or utcnow()
    stmt = (
        select(Task)
        .where(Task.due_at < cutoff, Task.status != TaskStatus.DONE.value)
        .order_by(Task.due_at, Task.id)
    )
    if assignee is not None:
        stmt = stmt.where(Task.assignee == assignee)
    return list(session.scalars(stmt))
