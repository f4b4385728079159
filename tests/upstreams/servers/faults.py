"""A streamable-HTTP upstream (the SDK's lowlevel Server, so 2026-07-28 and the handshake
era alike) whose tools fail in the ways a real upstream fails, for the differential tests
of the gateway's doors and legs (tests/front/test_differential.py).

    python -m tests.upstreams.servers.faults PORT      (at http://127.0.0.1:PORT/mcp)

Tools: `echo` (its arguments back, as text and structured content, after waiting `hold`
seconds), `fail` (a tool error: isError), `refuse` (a JSON-RPC error answer, code
REFUSED), `sleep` (waits `seconds` in `steps`, 0.1 s each unless given, reporting progress
as each begins when asked), `cancelled` (how many calls of `sleep` with the same `tag`
were cancelled while running), and `sick`, whose calls the HTTP layer answers with 500
before the server sees them (the tool never runs).

It declares no list_changed: the gateway holds no listen stream to it, so what a gateway
knows of its health comes from the calls a test makes (and from health checks of an idle
connection, which the tests put off).
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import mcp_types as types
from mcp import MCPError
from mcp.server import Server, ServerRequestContext

REFUSED = -32042
"""The code of `refuse`'s error answer: an application's own, outside JSON-RPC's range."""

OBJECT: dict[str, Any] = {"type": "object"}
TOOLS = [
    types.Tool(
        name="echo",
        description="The arguments back, after `hold` seconds",
        input_schema={"type": "object", "properties": {"hold": {"type": "number"}}},
    ),
    types.Tool(name="fail", description="A tool error", input_schema=OBJECT),
    types.Tool(name="refuse", description="A JSON-RPC error answer", input_schema=OBJECT),
    types.Tool(
        name="sleep",
        description="Wait, reporting progress",
        input_schema={
            "type": "object",
            "properties": {
                "seconds": {"type": "number"},
                "steps": {"type": "integer"},
                "tag": {"type": "string"},
            },
        },
    ),
    types.Tool(
        name="cancelled",
        description="Calls of `sleep` with this tag cancelled",
        input_schema={"type": "object", "properties": {"tag": {"type": "string"}}},
    ),
    types.Tool(name="sick", description="Answered 500 by the HTTP layer", input_schema=OBJECT),
]
cancelled: dict[str, int] = {}
"""Calls of `sleep` cancelled, by their `tag`: each test counts its own."""


def _text(text: str, **fields: Any) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], **fields)


async def list_tools(
    _ctx: ServerRequestContext, _params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def call_tool(ctx: ServerRequestContext, params: types.CallToolRequestParams) -> Any:
    arguments: dict[str, Any] = dict(params.arguments or {})
    if params.name == "echo":
        await anyio.sleep(float(arguments.get("hold", 0)))
        return _text(repr(sorted(arguments.items())), structured_content=arguments)
    if params.name == "fail":
        return _text("the tool failed", is_error=True)
    if params.name == "refuse":
        raise MCPError(REFUSED, "refused by the upstream", {"why": "asked to"})
    if params.name == "sleep":
        seconds = float(arguments.get("seconds", 1))
        steps = int(arguments.get("steps", max(1, round(seconds / 0.1))))
        try:
            for step in range(steps):
                await ctx.session.report_progress(step + 1, steps, f"step {step + 1}")
                await anyio.sleep(seconds / steps)
        except anyio.get_cancelled_exc_class():
            tag = str(arguments.get("tag", ""))
            cancelled[tag] = cancelled.get(tag, 0) + 1
            raise
        return _text("slept")
    if params.name == "cancelled":
        return _text(str(cancelled.get(str(arguments.get("tag", "")), 0)))
    raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}")


server = Server("faults-upstream", on_list_tools=list_tools, on_call_tool=call_tool)


def serve(port: int) -> None:
    import uvicorn
    from starlette.types import ASGIApp, Receive, Scope, Send

    app = server.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")

    def sick(inner: ASGIApp) -> ASGIApp:
        """A 500 for every call of `sick`, told by its Mcp-Name header (sent by every
        2026-07-28 client: the SDK's and the gateway's exchange alike)."""

        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            headers = dict(scope.get("headers", [])) if scope["type"] == "http" else {}
            if headers.get(b"mcp-name") == b"sick":
                await send({"type": "http.response.start", "status": 500, "headers": []})
                await send({"type": "http.response.body", "body": b"sick"})
                return
            await inner(scope, receive, send)

        return wrapped

    uvicorn.run(sick(app), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    serve(int(sys.argv[1]))
