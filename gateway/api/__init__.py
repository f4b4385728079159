"""The session API: agent sessions over REST, Server-Sent Events and WebSocket, in the same
Starlette app as /mcp and behind the same credentials (see routes.py for the endpoints)."""
