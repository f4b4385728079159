"""The gateway's own tools, offered as an MCP server that the pool holds as one more
upstream (named `gateway`, prefix `gateway__`, over the in-process transport): each is
listed only to callers whose tags grant it, checked, scoped and audited like any
upstream's tool, because it takes the same road (the call service, gateway/calls).

`ping` is here; `run_session` is the engine's (engine/tool.py), added by the runtime.
A tool that acts as its caller gets the caller the gateway vouches for: the call service
passes the principal along (`CALLER_META`, set on requests to this upstream alone)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from mcp import MCPError
from mcp.server import Server, ServerRequestContext

from . import __version__
from .principal import Principal
from .upstreams.config import CALLER_META, LINK_META, OWN_UPSTREAM, InProcessUpstream
from .upstreams.relay import Asker, own_links

Progress = Callable[[float, float | None, str | None], Awaitable[None]]
"""Reports progress (done, total, message) to the caller, when it asked for it."""


@dataclass(frozen=True, slots=True)
class Request:
    """What a handler has of its call besides the arguments."""

    caller: Principal | None
    """Who calls, as the gateway vouches (None: the request said nobody, which the call
    service never sends)."""
    asker: Asker | None = None
    """The caller's asker, to put questions to it during the call (sampling, elicitation;
    it answers with an error where the caller cannot be asked). None: nobody to ask."""
    progress: Progress | None = None
    owner: Hashable | None = None
    """Whose call it is, as the door said (an engine session's, for one it makes)."""


Handler = Callable[[Mapping[str, Any], Request], Awaitable[types.CallToolResult]]
"""Called with the arguments, which passed the tool's inputSchema (the call service
checks), and the request."""


@dataclass(frozen=True, slots=True)
class OwnTool:
    definition: types.Tool
    handler: Handler


async def _ping(arguments: Mapping[str, Any], _request: Request) -> types.CallToolResult:
    message = arguments.get("message", "")
    if not isinstance(message, str):  # the call service checked the schema; a direct client not
        return tool_error("ping: message must be a string")
    text = f"pong: {message}" if message else "pong"
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content={"pong": True, "message": message},
    )


PING = OwnTool(
    types.Tool(
        name="ping",
        description="Answers pong (with `message`, if given): the gateway's own tools are "
        "reachable, and this caller may use them.",
        input_schema={
            "type": "object",
            "properties": {
                "message": {"type": "string", "default": "", "description": "Sent back."}
            },
            "additionalProperties": False,
        },
        output_schema={
            "type": "object",
            "properties": {"pong": {"const": True}, "message": {"type": "string"}},
            "required": ["pong", "message"],
        },
        annotations=types.ToolAnnotations(
            title="Ping the gateway", read_only_hint=True, idempotent_hint=True
        ),
    ),
    _ping,
)

TOOLS: Mapping[str, OwnTool] = {tool.definition.name: tool for tool in (PING,)}


def own_server(
    tools: Mapping[str, OwnTool] = TOOLS, more: Callable[[], Mapping[str, OwnTool]] | None = None
) -> Server[Any]:
    """An MCP server offering `tools` under their own names (the pool adds the prefix),
    and those `more()` gives as it is listed (the flows' tools, which change with the
    tags: the pool lists them again when told, `UpstreamConnection.relist`)."""

    def current() -> Mapping[str, OwnTool]:
        return {**tools, **more()} if more is not None else tools

    async def list_tools(
        _ctx: ServerRequestContext[Any], _params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[tool.definition for tool in current().values()])

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        tool = current().get(params.name)
        if tool is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}")
        meta = params.meta
        link_id = meta.get(LINK_META) if isinstance(meta, Mapping) else None
        link = own_links.get(link_id) if isinstance(link_id, str) else None
        # Validated, the key has its Python name; a raw mapping keeps the wire name.
        wants_progress = isinstance(meta, Mapping) and (
            meta.get("progress_token", meta.get("progressToken")) is not None
        )

        async def progress(done: float, total: float | None, message: str | None) -> None:
            await ctx.session.report_progress(done, total, message)

        request = Request(
            _caller(meta),
            link.asker if link is not None else None,
            progress if wants_progress else None,
            link.owner if link is not None else None,
        )
        return await tool.handler(params.arguments or {}, request)

    return Server(
        OWN_UPSTREAM,
        version=__version__,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def _caller(meta: Any) -> Principal | None:
    vouched = meta.get(CALLER_META) if isinstance(meta, Mapping) else None
    if not isinstance(vouched, Mapping):
        return None
    user, org, roles = vouched.get("user"), vouched.get("org"), vouched.get("roles", [])
    if not isinstance(user, str) or not isinstance(org, str) or not isinstance(roles, list):
        return None
    return Principal(user, org, tuple(str(role) for role in roles))


def tool_error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


def own_upstream(
    tools: Mapping[str, OwnTool] = TOOLS,
    more: Callable[[], Mapping[str, OwnTool]] | None = None,
    **settings: Any,
) -> InProcessUpstream:
    """The pool's upstream of the gateway's own tools (`tools`, and `more()` as own_server
    says); `settings`: InProcessUpstream's fields (call_timeout, ...) other than its
    defaults."""
    return InProcessUpstream(server=own_server(tools, more), **settings)
