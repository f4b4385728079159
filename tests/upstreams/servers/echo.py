"""A small upstream MCP server for the tests, built with the SDK's lowlevel Server.

    python -m tests.upstreams.servers.echo stdio
    python -m tests.upstreams.servers.echo stdio-handshake  (no 2026-07-28: an SDK 1.x server)
    python -m tests.upstreams.servers.echo http PORT [N] (streamable HTTP at /mcp; the first
                                                           N requests answered 500)
    python -m tests.upstreams.servers.echo sse PORT      (legacy HTTP+SSE at /sse)

Tools: `echo` (returns its arguments; `region` also travels as an Mcp-Param header), `ask`
(asks the caller's model: sampling), `confirm` (asks the caller: elicitation), `sleep`
(waits `seconds`, reporting progress and a log message every 0.1 s), `crash` (exits the
process at once), `pid` (the server's process
id), `mutate` (adds a tool `added`, or with `{"describe": "..."}` changes echo's description,
or with `{"resource": URI}` adds a resource, and announces the change; with
`{"touch": URI}` tells subscribers that the resource was updated), `cancelled` (how
many calls were cancelled), and two that record each attempt in the file `journal` and
then exit the process unless the file already held a line: `lookup` (annotated idempotent)
and `pay` (not).

Resources: `echo://static` and the template `echo://items/{id}`. Prompt: `greet` (`name`).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio
import mcp_types as types
from mcp import MCPError
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.runner import serve_loop
from mcp.server.stdio import stdio_server
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    ResourcesListChanged,
    ResourceUpdated,
    ToolsListChanged,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

TOOLS = [
    types.Tool(
        name="echo",
        description="Echo the arguments",
        # `region` travels in an Mcp-Param-Region header too (2026-07-28 HTTP).
        input_schema={
            "type": "object",
            "properties": {"region": {"type": "string", "x-mcp-header": "Region"}},
        },
    ),
    types.Tool(
        name="sleep",
        description="Wait",
        input_schema={"type": "object", "properties": {"seconds": {"type": "number"}}},
    ),
    types.Tool(name="crash", description="Exit at once", input_schema={"type": "object"}),
    types.Tool(name="pid", description="The process id", input_schema={"type": "object"}),
    types.Tool(name="mutate", description="Change the tools", input_schema={"type": "object"}),
    types.Tool(name="cancelled", description="Calls cancelled", input_schema={"type": "object"}),
    types.Tool(
        name="ask",
        description="Ask the caller's model (sampling)",
        input_schema={"type": "object", "properties": {"prompt": {"type": "string"}}},
    ),
    types.Tool(
        name="confirm", description="Ask the caller (elicitation)", input_schema={"type": "object"}
    ),
    types.Tool(name="reject", description="Answer an error", input_schema={"type": "object"}),
    types.Tool(
        name="lookup",
        input_schema={"type": "object", "properties": {"journal": {"type": "string"}}},
        annotations=types.ToolAnnotations(idempotent_hint=True),
    ),
    types.Tool(
        name="pay",
        input_schema={"type": "object", "properties": {"journal": {"type": "string"}}},
        annotations=types.ToolAnnotations(destructive_hint=True, idempotent_hint=False),
    ),
]
RESOURCES = [types.Resource(name="static", uri="echo://static", mime_type="text/plain")]
TEMPLATES = [types.ResourceTemplate(name="item", uri_template="echo://items/{id}")]
PROMPTS = [types.Prompt(name="greet", arguments=[types.PromptArgument(name="name", required=True)])]
bus = InMemorySubscriptionBus()
cancelled = [0]


async def list_tools(
    _ctx: ServerRequestContext, _params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def list_resources(
    _ctx: ServerRequestContext, _params: types.PaginatedRequestParams | None
) -> types.ListResourcesResult:
    return types.ListResourcesResult(resources=RESOURCES)


async def list_templates(
    _ctx: ServerRequestContext, _params: types.PaginatedRequestParams | None
) -> types.ListResourceTemplatesResult:
    return types.ListResourceTemplatesResult(resource_templates=TEMPLATES)


async def read_resource(
    _ctx: ServerRequestContext, params: types.ReadResourceRequestParams
) -> types.ReadResourceResult:
    return types.ReadResourceResult(
        contents=[types.TextResourceContents(uri=params.uri, text=f"contents of {params.uri}")]
    )


async def list_prompts(
    _ctx: ServerRequestContext, _params: types.PaginatedRequestParams | None
) -> types.ListPromptsResult:
    return types.ListPromptsResult(prompts=PROMPTS)


async def get_prompt(
    _ctx: ServerRequestContext, params: types.GetPromptRequestParams
) -> types.GetPromptResult:
    name = (params.arguments or {}).get("name", "you")
    return types.GetPromptResult(
        messages=[
            types.PromptMessage(
                role="user", content=types.TextContent(type="text", text=f"Hello {name}")
            )
        ]
    )


async def ask(
    ctx: ServerRequestContext, params: types.CallToolRequestParams, prompt: str
) -> types.CallToolResult | types.InputRequiredResult:
    """Sampling in both eras: a request on the session (handshake), or an
    InputRequiredResult answered by the caller's retry (2026-07-28)."""
    message = types.SamplingMessage(
        role="user", content=types.TextContent(type="text", text=prompt)
    )
    question = types.CreateMessageRequestParams(messages=[message], max_tokens=20)
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        answer: Any = (params.input_responses or {}).get("llm")
        if answer is None:
            request = types.CreateMessageRequest(params=question)
            return types.InputRequiredResult(input_requests={"llm": request}, request_state="asked")
        said = answer.content.text
    else:
        try:
            result = await ctx.session.create_message(
                [message], max_tokens=20, related_request_id=ctx.request_id
            )
        except MCPError as exc:
            said = f"refused: {exc.error.message}"
        else:
            assert isinstance(result.content, types.TextContent)
            said = result.content.text
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=f"model said: {said}")]
    )


async def confirm(
    ctx: ServerRequestContext, params: types.CallToolRequestParams
) -> types.CallToolResult | types.InputRequiredResult:
    schema: dict[str, Any] = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        answer: Any = (params.input_responses or {}).get("confirm")
        if answer is None:
            form = types.ElicitRequestFormParams(message="Sure?", requested_schema=schema)
            request = types.ElicitRequest(params=form)
            return types.InputRequiredResult(input_requests={"confirm": request}, request_state="c")
    else:
        try:
            answer = await ctx.session.elicit_form(
                "Sure?", schema, related_request_id=ctx.request_id
            )
        except MCPError as exc:
            text = f"refused: {exc.error.message}"
            return types.CallToolResult(content=[types.TextContent(type="text", text=text)])
    text = f"{answer.action} {answer.content}"
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


async def call_tool(
    ctx: ServerRequestContext, params: types.CallToolRequestParams
) -> types.CallToolResult | types.InputRequiredResult:
    arguments: dict[str, Any] = dict(params.arguments or {})
    if params.name == "ask":
        return await ask(ctx, params, str(arguments.get("prompt", "say hi")))
    if params.name == "confirm":
        return await confirm(ctx, params)
    if params.name == "sleep":
        seconds = float(arguments.get("seconds", 1))
        steps = max(1, round(seconds / 0.1))
        try:
            for step in range(steps):
                await anyio.sleep(seconds / steps)
                await ctx.session.report_progress(step + 1, steps, f"step {step + 1}")
                await ctx.session.send_log_message(
                    "info", {"step": step + 1}, logger="sleep", related_request_id=ctx.request_id
                )
        except anyio.get_cancelled_exc_class():
            cancelled[0] += 1
            raise
        text = "slept"
    elif params.name == "cancelled":
        text = str(cancelled[0])
    elif params.name in ("lookup", "pay"):
        journal = anyio.Path(str(arguments["journal"]))
        before = await journal.read_text() if await journal.exists() else ""
        await journal.write_text(f"{before}{params.name}\n")
        if not before:
            os._exit(4)
        text = "done"
    elif params.name == "crash":
        os._exit(3)
    elif params.name == "reject":  # a JSON-RPC error answer, not a tool error
        code = int(arguments.get("code", -32050))  # any code: -32000 is a common one
        message = str(arguments.get("message", "rejected by echo"))
        raise MCPError(code, message, {"why": "asked to"} if arguments.get("data", True) else None)
    elif params.name == "pid":
        text = str(os.getpid())
    elif params.name == "mutate":
        if "describe" in arguments:
            TOOLS[0] = TOOLS[0].model_copy(update={"description": str(arguments["describe"])})
        elif "touch" in arguments:  # the resource changed: tell its subscribers
            uri = str(arguments["touch"])
            await bus.publish(ResourceUpdated(uri=uri))
            if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
                await ctx.session.send_resource_updated(uri)
            return types.CallToolResult(content=[types.TextContent(type="text", text="touched")])
        elif "resource" in arguments:
            uri = str(arguments["resource"])
            RESOURCES.append(types.Resource(name=uri.rsplit("/", 1)[-1], uri=uri))
            await bus.publish(ResourcesListChanged())
        else:
            TOOLS.append(types.Tool(name="added", input_schema={"type": "object"}))
        await bus.publish(ToolsListChanged())
        text = "mutated"
    else:
        text = repr(sorted(arguments.items()))
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], structured_content=arguments
    )


async def complete(
    _ctx: ServerRequestContext, params: types.CompleteRequestParams
) -> types.CompleteResult:
    """`greet`'s name from a few names, `echo://items/{id}`'s id from 1..3; by prefix."""
    if isinstance(params.ref, types.PromptReference) and params.ref.name == "greet":
        known = ["Ann", "Andy", "Bea"]
    elif isinstance(params.ref, types.ResourceTemplateReference):
        known = ["1", "2", "3"]
    else:
        known = []
    values = [v for v in known if v.startswith(params.argument.value)]
    return types.CompleteResult(completion=types.Completion(values=values, total=len(values)))


async def subscribe(
    _ctx: ServerRequestContext,
    _params: types.SubscribeRequestParams | types.UnsubscribeRequestParams,
) -> types.EmptyResult:
    return types.EmptyResult()  # updates go to the session's stream whoever subscribed


class EchoServer(Server):
    def create_initialization_options(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault(
            "notification_options",
            NotificationOptions(tools_changed=True, resources_changed=True, prompts_changed=True),
        )
        return super().create_initialization_options(*args, **kwargs)


server = EchoServer(
    "echo-upstream",
    on_list_tools=list_tools,
    on_call_tool=call_tool,
    on_list_resources=list_resources,
    on_list_resource_templates=list_templates,
    on_read_resource=read_resource,
    on_list_prompts=list_prompts,
    on_get_prompt=get_prompt,
    on_completion=complete,
    on_subscribe_resource=subscribe,
    on_unsubscribe_resource=subscribe,
    on_subscriptions_listen=ListenHandler(bus),
)


async def serve_stdio() -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


async def serve_stdio_handshake() -> None:
    """The handshake era only (clients' `server/discover` probe fails, and they fall back
    to `initialize`), as an SDK 1.x server speaks."""
    async with stdio_server() as (read, write), server.lifespan(server) as state:
        options = server.create_initialization_options()
        await serve_loop(server, read, write, lifespan_state=state, init_options=options)


def serve_http(port: int, failures: int = 0) -> None:
    """`failures`: answer the first that many requests with 500, as a sick server would."""
    import uvicorn
    from starlette.types import ASGIApp, Receive, Scope, Send

    app = server.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")
    left = [failures]

    def failing(inner: ASGIApp) -> ASGIApp:
        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and left[0] > 0:
                left[0] -= 1
                await send({"type": "http.response.start", "status": 500, "headers": []})
                await send({"type": "http.response.body", "body": b"sick"})
                return
            await inner(scope, receive, send)

        return wrapped

    uvicorn.run(failing(app), host="127.0.0.1", port=port, log_level="warning")


def serve_sse(port: int) -> None:
    import uvicorn
    from mcp.server.sse import SseServerTransport
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Mount, Route

    sse = SseServerTransport("/messages/")

    async def handle_sse(request: Request) -> Response:
        send = request._send  # the SDK documents taking it from the request
        async with sse.connect_sse(request.scope, request.receive, send) as (read, write):
            await server.run(read, write, server.create_initialization_options())
        return Response()

    app = Starlette(
        routes=[
            Route("/sse", handle_sse, methods=["GET"]),
            Mount("/messages/", app=sse.handle_post_message),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        serve_http(int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    elif sys.argv[1:2] == ["sse"]:
        serve_sse(int(sys.argv[2]))
    elif sys.argv[1:2] == ["stdio-handshake"]:
        anyio.run(serve_stdio_handshake)
    else:
        anyio.run(serve_stdio)
