"""MCP tool definitions, one module per domain; each exposes register(server, app)."""
