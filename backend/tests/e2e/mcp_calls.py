"""Call opsdesk's MCP tools the way a client does, and unwrap the results."""

from __future__ import annotations

from typing import Any

from mcp import ClientSession


async def call(mcp: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; return its structured result."""
    result = await mcp.call_tool(tool, arguments)
    text = " ".join(getattr(c, "text", "") for c in result.content)
    assert not result.is_error, f"{tool} failed: {text}"
    assert result.structured_content is not None, f"{tool} returned no structured content"
    return dict(result.structured_content)


async def call_error(mcp: ClientSession, tool: str, **arguments: Any) -> str:
    """Call a tool that must fail as a tool error (isError), never a crash; return the message."""
    result = await mcp.call_tool(tool, arguments)
    text = " ".join(getattr(c, "text", "") for c in result.content)
    assert result.is_error, f"{tool} should have failed but returned {result.structured_content}"
    return text


def is_invalid(message: str) -> bool:
    """True for a refused argument: the SDK's schema validation or opsdesk's InvalidArgument."""
    return "InvalidArgument" in message or "validation error" in message
