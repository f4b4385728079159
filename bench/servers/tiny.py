"""The smallest stdio MCP server that an SDK client accepts, from the standard library alone.

It answers `server/discover` with "method not found" (so the SDK client falls back to the
handshake era), `initialize`, `ping`, `tools/list` (one tool, `echo`) and `tools/call`.
Starting it costs a bare interpreter's start-up, not the SDK's imports, so a start-up
benchmark of many upstreams measures the gateway rather than its upstreams' imports.
"""

from __future__ import annotations

import json
import sys
from typing import Any

TOOLS = [{"name": "echo", "inputSchema": {"type": "object"}}]


def answer(message: dict[str, Any]) -> dict[str, Any] | None:
    method, ident = message.get("method"), message.get("id")
    if ident is None:
        return None  # a notification
    params = message.get("params") or {}
    if method == "initialize":
        result: dict[str, Any] = {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "tiny", "version": "1"},
        }
    elif method == "ping":
        result = {}
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        text = json.dumps(params.get("arguments") or {}, sort_keys=True)
        result = {"content": [{"type": "text", "text": text}], "isError": False}
    else:
        error = {"code": -32601, "message": f"method not found: {method}"}
        return {"jsonrpc": "2.0", "id": ident, "error": error}
    return {"jsonrpc": "2.0", "id": ident, "result": result}


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        reply = answer(json.loads(line))
        if reply is not None:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
