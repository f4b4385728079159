"""The gateway as an MCP server: per-caller views of the catalog, checked calls, and the
HTTP (`/mcp`) and stdio transports that carry them."""
