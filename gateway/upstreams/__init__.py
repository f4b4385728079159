"""The MCP Manager: upstream MCP servers, their configuration, pool and catalog."""
