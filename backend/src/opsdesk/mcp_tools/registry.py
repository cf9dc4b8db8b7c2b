"""How tools are registered: a tool's name is its function's name, said once."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from mcp.server.mcpserver import MCPServer

from opsdesk.app import calling_tool

F = TypeVar("F", bound=Callable[..., Any])


def tool_registrar(server: MCPServer[Any]) -> Callable[[str], Callable[[F], F]]:
    """Return a ``@tool("description")`` decorator that adds functions to ``server``.

    The tool is named after the function, and while it runs the App knows that name (for
    error messages, logs and idempotency keys), so no tool spells its own name.
    """

    def tool(description: str) -> Callable[[F], F]:
        def register(fn: F) -> F:
            @functools.wraps(fn)  # the SDK reads the signature through __wrapped__
            def named(*args: Any, **kwargs: Any) -> Any:
                with calling_tool(fn.__name__):
                    return fn(*args, **kwargs)

            server.add_tool(named, name=fn.__name__, description=description)
            return fn

        return register

    return tool
