"""A 2026-07-28 upstream whose `subscriptions/listen` does not start as the specification
says (an SSE response stream opened with `notifications/subscriptions/acknowledged`):

    python -m tests.upstreams.servers.listen PORT lines   (200 application/json, a chunked
        body: the acknowledgement as one JSON line, then kept open; as the conformance
        repository's reference server answers)
    python -m tests.upstreams.servers.listen PORT error   (404 with -32601, as a server
        without the method answers)
    python -m tests.upstreams.servers.listen PORT never   (no answer at all, kept open)

Everything else is the SDK's, and it declares `listChanged` (a listen handler is
registered), so a client expects announcements. Tools: `t`, and `add`, which adds a tool
`added` without announcing it anywhere (only a new listing can find it).
"""

from __future__ import annotations

import json
import sys

import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOOLS = [
    types.Tool(name="t", input_schema={"type": "object"}),
    types.Tool(name="add", description="Add a tool, silently", input_schema={"type": "object"}),
]


async def list_tools(
    _ctx: ServerRequestContext, _params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def call_tool(
    _ctx: ServerRequestContext, params: types.CallToolRequestParams
) -> types.CallToolResult:
    if params.name == "add" and all(tool.name != "added" for tool in TOOLS):
        TOOLS.append(types.Tool(name="added", input_schema={"type": "object"}))
    return types.CallToolResult(content=[types.TextContent(type="text", text=params.name)])


server = Server(
    "listen-upstream",
    on_list_tools=list_tools,
    on_call_tool=call_tool,
    on_subscriptions_listen=ListenHandler(InMemorySubscriptionBus()),
)


def misanswering(inner: ASGIApp, mode: str) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        if scope["type"] != "http" or headers.get(b"mcp-method") != b"subscriptions/listen":
            await inner(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body)
        if mode == "error":
            error = {"code": -32601, "message": "Method not found: subscriptions/listen"}
            answer = json.dumps({"jsonrpc": "2.0", "id": request["id"], "error": error})
            await send(_start(404))
            await send({"type": "http.response.body", "body": answer.encode()})
            return
        if mode == "lines":
            ack = {
                "jsonrpc": "2.0",
                "method": "notifications/subscriptions/acknowledged",
                "params": {
                    "notifications": request["params"]["notifications"],
                    "_meta": {"io.modelcontextprotocol/subscriptionId": request["id"]},
                },
            }
            await send(_start(200))
            line = json.dumps(ack) + "\n"
            await send({"type": "http.response.body", "body": line.encode(), "more_body": True})
        await _until_disconnected(receive)

    return app


def _start(status: int) -> Message:
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json")],
    }


async def _until_disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def serve(port: int, mode: str) -> None:
    import uvicorn

    app = server.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")
    uvicorn.run(misanswering(app, mode), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2])
