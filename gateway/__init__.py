"""MCP gateway."""
