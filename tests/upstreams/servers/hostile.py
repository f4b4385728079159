"""A hostile stdio upstream, written by hand over JSON-RPC lines (no SDK), so that it can
send what an SDK server never would: tool definitions aimed at the gateway, duplicate
names, results nested too deep to parse, junk on stdout.

    python -m tests.upstreams.servers.hostile [junk] [--ref-url URL]

Handshake era only (2025-11-25). Every tool answers with its arguments as structured
content, except `deep`, whose result is nested 10,000 levels. `junk`: a line of junk on
stdout before every answer. `--ref-url`: the URL the `fetches` tool's schema refers to.
"""

from __future__ import annotations

import json
import sys
from typing import Any

REF_URL = "http://127.0.0.1:9/schema.json"
if "--ref-url" in sys.argv:
    REF_URL = sys.argv[sys.argv.index("--ref-url") + 1]
JUNK = "junk" in sys.argv[1:]


def tools() -> list[dict[str, Any]]:
    return [
        {"name": "plain", "inputSchema": {"type": "object"}},
        {
            "name": "refund",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "amount": {"type": "number", "default": 1000},
                    "currency": {"type": "string", "default": "USD"},
                    "payment": {"$ref": "#/$defs/Payment"},
                },
                "$defs": {
                    "Payment": {
                        "type": "object",
                        "properties": {"method": {"type": "string", "default": "wire"}},
                    }
                },
            },
        },
        {
            "name": "fetches",
            "inputSchema": {"type": "object", "properties": {"a": {"$ref": REF_URL}}},
        },
        {
            "name": "backtracks",
            "inputSchema": {
                "type": "object",
                "properties": {"a": {"type": "string", "pattern": "^(a+)+$"}},
            },
        },
        {
            "name": "loops",
            "inputSchema": {
                "type": "object",
                "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}},
                "properties": {"x": {"$ref": "#/$defs/a"}},
            },
        },
        {"name": "null_schema", "inputSchema": None},
        {"name": "no_schema"},
        {"name": "list_schema", "inputSchema": ["type", "object"]},
        {"name": "broken_schema", "inputSchema": {"type": "object", "required": True}},
        {"name": "twin", "description": "first", "inputSchema": {"type": "object"}},
        {"name": "twin", "description": "second", "inputSchema": {"type": "object"}},
        {"name": "deep", "inputSchema": {"type": "object"}},
    ]


def answer(request: dict[str, Any]) -> dict[str, Any] | None:
    method = request.get("method")
    if "id" not in request:
        return None  # a notification
    result: dict[str, Any]
    if method == "initialize":
        result = {
            "protocolVersion": "2025-11-25",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "hostile", "version": "1"},
        }
    elif method == "tools/list":
        result = {"tools": tools()}
    elif method == "tools/call":
        params = request.get("params") or {}
        arguments = params.get("arguments") or {}
        if params.get("name") == "deep":
            return {"jsonrpc": "2.0", "id": request["id"], "result": "R"}  # written below
        result = {
            "content": [{"type": "text", "text": json.dumps(arguments, sort_keys=True)}],
            "structuredContent": arguments,
        }
    elif method == "ping":
        result = {}
    else:
        return {
            "jsonrpc": "2.0",
            "id": request["id"],
            "error": {"code": -32601, "message": f"Method not found: {method}"},
        }
    return {"jsonrpc": "2.0", "id": request["id"], "result": result}


def main() -> None:
    deep = "[" * 10_000 + "]" * 10_000
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            continue
        reply = answer(request)
        if reply is None:
            continue
        if JUNK:
            sys.stdout.write("this is not JSON-RPC\n")
        text = json.dumps(reply)
        if reply.get("result") == "R":
            text = text.replace('"R"', '{"content": [], "structuredContent": {"v": ' + deep + "}}")
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
