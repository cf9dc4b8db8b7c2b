"""Task tools: create, get, search, status changes, comments, the overdue list."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer
from pydantic import AwareDatetime

from opsdesk.app import App
from opsdesk.domains.tasks import service as tasks
from opsdesk.domains.tasks.models import Priority, Task, TaskStatus
from opsdesk.mcp_tools.registry import tool_registrar
from opsdesk.mcp_tools.types import (
    Actor,
    Id,
    IdempotencyKey,
    Limit,
    Name,
    Query,
    Text,
    dump,
)


def register(server: MCPServer[Any], app: App) -> None:
    """Add the task tools to ``server``."""
    tool = tool_registrar(server)

    @tool("Create a task (status todo). due_at needs a timezone.")
    def tasks_create_task(
        title: Name,
        description: Text = "",
        priority: Priority = Priority.NORMAL,
        assignee: Actor | None = None,
        due_at: AwareDatetime | None = None,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        args: dict[str, Any] = {
            "title": title,
            "description": description,
            "priority": priority,
            "assignee": assignee,
            "due_at": due_at,
        }
        return app.create(
            model=Task,
            key=idempotency_key,
            arguments=args,
            make=lambda s: tasks.create_task(s, **args).id,
            load=lambda s, i: dump(tasks.get_task(s, task_id=i)),
        )

    @tool("Get a task by id, with its comments.")
    def tasks_get_task(task_id: Id) -> dict[str, Any]:
        def get(s: Any) -> dict[str, Any]:
            task = tasks.get_task(s, task_id=task_id)
            return dump(task, comments=[dump(c) for c in task.comments])

        return app.run(get)

    @tool("Search tasks by text, status and assignee.")
    def tasks_search_tasks(
        query: Query = "",
        status: TaskStatus | None = None,
        assignee: Actor | None = None,
        limit: Limit = 50,
    ) -> dict[str, Any]:
        return app.run(
            lambda s: {
                "results": [
                    dump(t)
                    for t in tasks.search_tasks(
                        s, query=query, status=status, assignee=assignee, limit=limit
                    )
                ]
            }
        )

    @tool("Set a task's status (todo, in_progress, done).")
    def tasks_set_status(task_id: Id, status: TaskStatus) -> dict[str, Any]:
        return app.run(lambda s: dump(tasks.set_status(s, task_id=task_id, status=status)))

    @tool("Add a comment to a task.")
    def tasks_add_comment(task_id: Id, author: Actor, body: Text) -> dict[str, Any]:
        return app.run(
            lambda s: dump(tasks.add_comment(s, task_id=task_id, author=author, body=body))
        )

    @tool("Tasks not done whose due time has passed, most overdue first.")
    def tasks_overdue(assignee: Actor | None = None) -> dict[str, Any]:
        return app.run(
            lambda s: {"results": [dump(t) for t in tasks.overdue_tasks(s, assignee=assignee)]}
        )
