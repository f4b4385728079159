"""An upstream that offers a tool only to clients that declare roots, as file servers do:

    python -m tests.upstreams.servers.roots stdio            (both eras; SDK clients pick
                                                               2026-07-28)
    python -m tests.upstreams.servers.roots stdio-handshake  (the handshake era only)
    python -m tests.upstreams.servers.roots http PORT        (streamable HTTP at /mcp)

Tools: `open` (always), and `rooted` (only when the client declares roots), which answers
the client's roots, one URI a line: asked with `roots/list` (handshake era) or with an
InputRequiredResult (2026-07-28; with `{"sample": true}` it asks for a model's answer at
the same time, and trusts whatever roots answer the retry carries, as a stateless server
does).
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.runner import serve_loop
from mcp.server.stdio import stdio_server
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

OPEN = types.Tool(name="open", input_schema={"type": "object"})
ROOTED = types.Tool(name="rooted", input_schema={"type": "object"})


def _has_roots(ctx: ServerRequestContext) -> bool:
    capabilities = ctx.session.client_capabilities
    return capabilities is not None and capabilities.roots is not None


async def list_tools(
    ctx: ServerRequestContext, _params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[OPEN, ROOTED] if _has_roots(ctx) else [OPEN])


async def call_tool(
    ctx: ServerRequestContext, params: types.CallToolRequestParams
) -> types.CallToolResult | types.InputRequiredResult:
    if params.name != "rooted":
        return _text("open")
    if not _has_roots(ctx):
        return _text("no roots declared")
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        answers: dict[str, Any] = dict(params.input_responses or {})
        wanted: dict[str, types.InputRequest] = {}
        if not isinstance(answers.get("roots"), types.ListRootsResult):
            wanted["roots"] = types.ListRootsRequest()
        if (params.arguments or {}).get("sample") and "llm" not in answers:
            message = types.SamplingMessage(
                role="user", content=types.TextContent(type="text", text="which?")
            )
            wanted["llm"] = types.CreateMessageRequest(
                params=types.CreateMessageRequestParams(messages=[message], max_tokens=5)
            )
        if wanted:
            return types.InputRequiredResult(input_requests=wanted, request_state="r")
        roots = answers["roots"].roots
    else:
        roots = (await ctx.session.list_roots()).roots
    return _text("\n".join(str(root.uri) for root in roots))


def _text(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


server = Server("roots-upstream", on_list_tools=list_tools, on_call_tool=call_tool)


async def serve_stdio() -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


async def serve_stdio_handshake() -> None:
    async with stdio_server() as (read, write), server.lifespan(server) as state:
        options = server.create_initialization_options()
        await serve_loop(server, read, write, lifespan_state=state, init_options=options)


def serve_http(port: int) -> None:
    import uvicorn

    app = server.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        serve_http(int(sys.argv[2]))
    else:
        anyio.run(serve_stdio_handshake if sys.argv[1:2] == ["stdio-handshake"] else serve_stdio)
