"""An upstream MCP server with many tools, over stateful streamable HTTP (the SDK's
lowlevel `Server`, served by uvicorn on 127.0.0.1, at `/mcp`).

    python -m bench.servers.wide PORT N

Tools: `echo` (returns its arguments as text and as structured content) and N generated
tools `tool_000`, `tool_001`, ... (`tool_0000` from N = 1,001 on), each with a description
and a small input schema of two to four properties drawn from the kinds a real server
offers (ids with a pattern, bounded integers, enums, booleans, arrays of strings, a nested
object), some required. A generated tool answers with one line of text.

The tools' input schemas are also given to the SDK (`get_tool_input_schema`), so that a
2026-07-28 call does not make the server build its whole tool list again.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import mcp_types as types
from mcp.server import Server, ServerRequestContext

ECHO_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "maxLength": 1000, "description": "What to send back"},
        "n": {"type": "integer", "minimum": 0, "maximum": 1000},
    },
    "additionalProperties": False,
}

PROPERTIES: list[tuple[str, dict[str, Any]]] = [
    ("order_id", {"type": "string", "pattern": "^ORD-[0-9]{6}$", "description": "The order"}),
    ("customer_id", {"type": "string", "minLength": 3, "maxLength": 40}),
    ("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}),
    ("amount", {"type": "number", "exclusiveMinimum": 0, "maximum": 10000}),
    ("currency", {"type": "string", "enum": ["USD", "EUR", "GBP", "JPY"]}),
    ("include_archived", {"type": "boolean", "default": False}),
    ("query", {"type": "string", "maxLength": 200, "description": "Free text to search"}),
    ("tags", {"type": "array", "items": {"type": "string"}, "maxItems": 10}),
    (
        "period",
        {
            "type": "object",
            "properties": {
                "from": {"type": "string", "format": "date"},
                "to": {"type": "string", "format": "date"},
            },
            "required": ["from"],
        },
    ),
    ("note", {"type": "string", "maxLength": 500}),
]
VERBS = ["get", "list", "search", "create", "update", "archive", "export", "count"]
NOUNS = ["order", "customer", "invoice", "ticket", "refund", "shipment", "product", "report"]


def generated(index: int, width: int) -> types.Tool:
    """The index-th generated tool: deterministic, so that every copy offers the same."""
    picked = [PROPERTIES[(index * 3 + step * 7) % len(PROPERTIES)] for step in range(2 + index % 3)]
    properties = dict(picked)
    verb, noun = VERBS[index % len(VERBS)], NOUNS[(index // len(VERBS)) % len(NOUNS)]
    return types.Tool(
        name=f"tool_{index:0{width}d}",
        title=f"{verb.title()} {noun}",
        description=f"{verb.title()} a {noun} in the back office (generated tool {index}).",
        input_schema={
            "type": "object",
            "properties": properties,
            "required": list(properties)[:1],
            "additionalProperties": False,
        },
        annotations=types.ToolAnnotations(
            read_only_hint=verb in ("get", "list", "search", "count", "export")
        ),
    )


def build(count: int) -> Server:
    width = max(3, len(str(count - 1)))
    tools = [
        types.Tool(name="echo", description="Echo the arguments", input_schema=ECHO_SCHEMA),
        *(generated(index, width) for index in range(count)),
    ]
    schemas = {tool.name: tool.input_schema for tool in tools}
    listing = types.ListToolsResult(tools=tools)

    async def list_tools(
        _ctx: ServerRequestContext, _params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return listing

    async def call_tool(
        _ctx: ServerRequestContext, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        arguments = dict(params.arguments or {})
        if params.name == "echo":
            text = json.dumps(arguments, sort_keys=True)
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=text)], structured_content=arguments
            )
        if params.name not in schemas:
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=f"no tool {params.name}")],
                is_error=True,
            )
        text = f"{params.name}: done ({len(arguments)} arguments)"
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    return Server(
        "wide-upstream",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        get_tool_input_schema=schemas.get,
    )


def serve(port: int, count: int) -> None:
    import uvicorn

    app = build(count).streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m bench.servers.wide PORT N")
    serve(int(sys.argv[1]), int(sys.argv[2]))
