"""The gateway's MCP server: every handler serves the caller the transport authenticated.

Listings come from the caller's view (views.py). Every `tools/call` goes through the
Executor, the one road to an upstream, which runs the permission-and-scope check again
whatever the client was shown: a tool the caller may not use is answered exactly as an
unknown tool is, so its existence does not leak; a granted tool called with arguments
outside the caller's scope is a tool error carrying the check's reason, which a model can
act on. Results travel back as the upstream gave them, less the upstream's own serverInfo
stamp (the caller talks to the gateway, not to the upstream).
"""

from __future__ import annotations

import warnings
from typing import Any, TypeVar

import mcp_types as types
from mcp import MCPError
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.shared.exceptions import MCPDeprecationWarning
from pydantic import BaseModel

from ..tags.policy import Outcome
from ..upstreams.connection import UpstreamError
from ..upstreams.execute import (
    Executor,
    InvalidArguments,
    PermissionDenied,
    ToolCall,
    UnknownTool,
)
from ..upstreams.pool import Pool
from .caller import credential
from .notify import Audience
from .views import CONTEXT_PROMPT, CONTEXT_URI, View, Views, context_text

RESOURCE_NOT_FOUND = -32002
"""The code MCP gives a read of a resource that does not exist."""

M = TypeVar("M", bound=BaseModel)


class GatewayServer(Server[dict[str, Any]]):
    """A lowlevel Server that always declares list_changed for tools, resources and
    prompts: the gateway tells clients whenever their view changes. (The HTTP session
    manager builds the initialize result without arguments, so the default goes here.)"""

    def create_initialization_options(  # type: ignore[no-untyped-def]
        self, notification_options: NotificationOptions | None = None, *args, **kwargs
    ):
        options = notification_options or NotificationOptions(
            tools_changed=True, resources_changed=True, prompts_changed=True
        )
        return super().create_initialization_options(options, *args, **kwargs)


class Front:
    """The handlers, bound to the gateway's parts."""

    def __init__(self, views: Views, executor: Executor, pool: Pool, version: str) -> None:
        self.views = views
        self.executor = executor
        self.pool = pool
        self.audience = Audience(views)
        self.server = GatewayServer(
            "mcp-tag-gateway",
            version=version,
            title="MCP tag gateway",
            instructions="Tools of several MCP servers, as your organisation permits. "
            f"Your instructions: the prompt {CONTEXT_PROMPT!r} or the resource {CONTEXT_URI}.",
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_list_resources=self.list_resources,
            on_list_resource_templates=self.list_resource_templates,
            on_read_resource=self.read_resource,
            on_list_prompts=self.list_prompts,
            on_get_prompt=self.get_prompt,
            on_subscriptions_listen=self.audience.listen,
        )
        self.server.middleware.append(self.audience.middleware)

    def _view(self) -> View:
        return self.views.view(credential().principal)

    async def list_tools(
        self, _ctx: ServerRequestContext[Any], _params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=list(self._view().tools))

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        context = self.views.context(credential().principal)
        call = ToolCall(params.name, params.arguments or {})

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            await ctx.session.report_progress(progress, total, message)

        async def log(message: types.LoggingMessageNotificationParams) -> None:
            with warnings.catch_warnings():  # deprecated in 2026-07-28, relayed all the same
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await ctx.session.send_log_message(
                    message.level, message.data, message.logger, related_request_id=ctx.request_id
                )

        try:
            outcome = await self.executor.execute(context, call, on_progress=progress, on_log=log)
        except PermissionDenied as exc:
            if exc.decision.outcome is Outcome.OUT_OF_SCOPE:
                return _tool_error(f"{params.name}: not permitted: {exc.decision.reason}")
            raise _unknown_tool(params.name) from None
        except UnknownTool:
            raise _unknown_tool(params.name) from None
        except (InvalidArguments, UpstreamError) as exc:
            return _tool_error(str(exc))
        assert outcome.result is not None
        return _own(outcome.result)

    async def list_resources(
        self, _ctx: ServerRequestContext[Any], _params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=list(self._view().resources))

    async def list_resource_templates(
        self, _ctx: ServerRequestContext[Any], _params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=list(self._view().templates))

    async def read_resource(
        self, _ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        view, uri = self._view(), str(params.uri)
        if uri == CONTEXT_URI:
            text = types.TextResourceContents(
                uri=uri, mime_type="text/markdown", text=context_text(view.context)
            )
            return types.ReadResourceResult(contents=[text])
        if not view.shows_resource(uri):
            raise MCPError(RESOURCE_NOT_FOUND, f"Resource not found: {uri}")
        try:
            return _own(await self.pool.read_resource(uri))
        except UpstreamError as exc:
            raise MCPError(types.INTERNAL_ERROR, str(exc)) from None

    async def list_prompts(
        self, _ctx: ServerRequestContext[Any], _params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=list(self._view().prompts))

    async def get_prompt(
        self, _ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        view = self._view()
        if params.name == CONTEXT_PROMPT:
            text = types.TextContent(type="text", text=context_text(view.context))
            return types.GetPromptResult(
                description="Your instructions, from your organisation's tags",
                messages=[types.PromptMessage(role="user", content=text)],
            )
        if not view.shows_prompt(params.name):
            raise MCPError(types.INVALID_PARAMS, f"Unknown prompt: {params.name}")
        try:
            return _own(await self.pool.get_prompt(params.name, params.arguments or {}))
        except UpstreamError as exc:
            raise MCPError(types.INTERNAL_ERROR, str(exc)) from None


def _unknown_tool(name: str) -> MCPError:
    return MCPError(types.INVALID_PARAMS, f"Unknown tool: {name}")


def _tool_error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


def _own(result: M) -> M:
    """The result without the upstream's serverInfo stamp (the SDK adds the gateway's)."""
    meta = getattr(result, "meta", None)
    if not meta or types.SERVER_INFO_META_KEY not in meta:
        return result
    rest = {k: v for k, v in meta.items() if k != types.SERVER_INFO_META_KEY}
    return result.model_copy(update={"meta": rest or None})
