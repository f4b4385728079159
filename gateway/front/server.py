"""The gateway's MCP server: every handler serves the caller the transport authenticated.

Listings come from the caller's view (views.py). Every `tools/call` goes to the call
service (gateway/calls), the one road to an upstream, which runs the permission-and-scope
check again whatever the client was shown. How its outcome is answered is decided here: a
tool the caller may not use is answered exactly as an unknown tool is, so its existence
does not leak; a granted tool called with arguments outside the caller's scope is a tool
error carrying the check's reason, which a model can act on, as is an upstream that failed;
an upstream's own JSON-RPC error is passed on. Results travel back as the upstream gave
them, less its serverInfo stamp (the caller talks to the gateway, not to the upstream).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast
from weakref import WeakKeyDictionary, WeakValueDictionary

import anyio
import mcp_types as types
from mcp import MCPError
from mcp.server import CacheHint, NotificationOptions, Server, ServerRequestContext
from mcp.server.caching import CacheableMethod
from mcp.server.connection import Connection
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import LOG_LEVEL_META_KEY
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from ..calls import CallChannel, Completed, Failed, Refused, ToolCall
from ..errors import (
    MalformedArguments,
    PermissionDenied,
    UnknownTool,
    UpstreamError,
    UpstreamRejected,
)
from ..principal import Principal
from ..tags.policy import Outcome
from ..upstreams.relay import Asker, LogCallback, ProgressCallback, unstamped
from ..upstreams.requests import InputRound
from .askers import NoBackChannel, SessionAsker
from .bridge import Bridge
from .caller import connection_of, credential
from .notify import Audience, ResourceFollowers
from .views import CONTEXT_PROMPT, CONTEXT_URI, View, context_text

if TYPE_CHECKING:
    from ..runtime import Runtime

PER_CALLER: dict[CacheableMethod, CacheHint] = {
    method: CacheHint(ttl_ms=0, scope="private")
    for method in (
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "prompts/list",
    )
}
"""2026-07-28 cache hints: every listing is this caller's own (never shared between
callers), and stale at once, since a tag edit may change it any time."""

RESOURCE_NOT_FOUND = -32002
"""The code the handshake era gives a resource that does not exist; 2026-07-28 (SEP-2164)
gives -32602 (invalid params) instead."""


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

    def __init__(self, runtime: Runtime, version: str) -> None:
        self.runtime = runtime
        self.views = runtime.views
        self.service = runtime.service
        self.pool = runtime.pool
        self.audience = Audience(self.views, ResourceFollowers(self.pool))
        self._levels: WeakKeyDictionary[Connection, types.LoggingLevel] = WeakKeyDictionary()
        """logging/setLevel per handshake-era connection."""
        self._following: set[int] = set()
        """Connections with resource subscriptions (by id)."""
        self.bridge = Bridge()
        """2026-07-28 callers asked by handshake-era upstreams (run it beside the pool)."""
        self.sessions: WeakValueDictionary[str, Connection] = WeakValueDictionary()
        """Handshake-era HTTP sessions by MCP session id, once one of their requests has
        reached a handler (for session_calls.py)."""
        with warnings.catch_warnings():  # logging is deprecated in 2026-07-28, not before
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            self.server = self._build_server(version)
        self.server.middleware.append(self.audience.middleware)
        self.server.middleware.append(self._remember_session)

    def _build_server(self, version: str) -> GatewayServer:
        return GatewayServer(
            "mcp-tag-gateway",
            get_tool_input_schema=self.input_schema,
            version=version,
            title="MCP tag gateway",
            instructions="Tools of several MCP servers, as your organisation permits. "
            f"Your instructions: the prompt {CONTEXT_PROMPT!r} or the resource {CONTEXT_URI}.",
            cache_hints=PER_CALLER,
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_list_resources=self.list_resources,
            on_list_resource_templates=self.list_resource_templates,
            on_read_resource=self.read_resource,
            on_list_prompts=self.list_prompts,
            on_get_prompt=self.get_prompt,
            on_subscriptions_listen=self.audience.listen,
            on_set_logging_level=self.set_logging_level,
            on_completion=self.complete,
            on_subscribe_resource=self.subscribe_resource,
            on_unsubscribe_resource=self.unsubscribe_resource,
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The front's own tasks, beside a running runtime: the list_changed fan-out and
        the bridge (2026-07-28 callers asked by handshake-era upstreams)."""
        stop = self.runtime.on_change(self.audience.changed)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self.audience.run)
                tasks.start_soon(self.bridge.run)
                try:
                    yield
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            stop()

    async def _remember_session(
        self,
        ctx: ServerRequestContext[Any],
        call_next: Callable[[ServerRequestContext[Any]], Awaitable[Any]],
    ) -> Any:
        connection = connection_of(ctx.session)
        session_id = connection.session_id
        if session_id is not None and session_id not in self.sessions:
            self.sessions[session_id] = connection
        return await call_next(ctx)

    def view(self) -> View:
        """What the authenticated caller sees."""
        return self.views.view(credential().principal)

    def input_schema(self, name: str) -> Mapping[str, Any] | None:
        """For the SDK's check of a 2026-07-28 call's `Mcp-Param-*` headers. Without it the
        SDK would run tools/list (the caller's whole listing) on every such call."""
        tool = self.view().tools_by_name.get(name)
        return tool.input_schema if tool is not None else None

    async def list_tools(
        self, _ctx: ServerRequestContext[Any], _params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=list(self.view().tools))

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        """The SDK's door (every call the hand-written doors do not take)."""
        modern = ctx.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS
        level: types.LoggingLevel | None
        if modern:  # logs only when this request asked for them (_meta logLevel)
            level = cast(types.LoggingLevel | None, (ctx.meta or {}).get(LOG_LEVEL_META_KEY))
        else:  # every level until the client sets one
            level = self.log_level(connection_of(ctx.session))

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            await ctx.session.report_progress(progress, total, message)

        async def log(message: types.LoggingMessageNotificationParams) -> None:
            with warnings.catch_warnings():  # deprecated in 2026-07-28, relayed all the same
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await ctx.session.send_log_message(
                    message.level, message.data, message.logger, related_request_id=ctx.request_id
                )

        meta: Mapping[str, Any] = ctx.meta or {}
        # Validated, the key has its Python name; a raw mapping keeps the wire name.
        wants_progress = meta.get("progress_token", meta.get("progressToken")) is not None
        capabilities = ctx.session.client_capabilities if modern else None
        channel = CallChannel(
            progress=progress if wants_progress else None,
            log=log,
            log_level=level,
            # A 2026-07-28 caller answers an upstream's questions by calling again
            # (InputRequiredResult, passed through); a handshake-era caller is asked on its
            # session, during the call.
            asker=NoBackChannel() if modern else SessionAsker(ctx),
            input_round=_round(params, capabilities) if modern else None,
            owner=connection_of(ctx.session),  # a 2026-07-28 request has its own
        )
        return await self.run_call(credential().principal, params, channel)

    async def run_call(
        self, principal: Principal, params: types.CallToolRequestParams, channel: CallChannel
    ) -> types.CallToolResult | types.InputRequiredResult:
        """A tools/call of `principal`, from any door to /mcp (the SDK handler above,
        modern_calls.py, session_calls.py): through the call service, its outcome answered
        as the module docstring says. `channel.input_round` is set for a 2026-07-28
        caller; one that declared sampling or elicitation (in the round's capabilities) is
        asked a handshake-era upstream's questions through the bridge (bridge.py), and
        answers them by calling again. Raises MCPError for a tool the caller may not see,
        for arguments JSON cannot carry, and with an upstream's own JSON-RPC error."""
        answers = channel.input_round
        if answers is None:
            return await self._run_call(principal, params, channel)
        if Bridge.issued(params.request_state):

            def permitted(tool: str, arguments: dict[str, Any]) -> bool:
                # The call goes on only as long as its caller may make it.
                context = self.views.context(principal)
                return self.service.permits(context, ToolCall(tool, arguments))

            relays = (channel.progress, channel.log)
            return await self.bridge.resume(principal, params, relays, permitted)
        capabilities = answers.capabilities
        if not self.bridge.can_ask(capabilities) or not self._asks_during_calls(params.name):
            return await self._run_call(principal, params, channel)
        wants_progress = channel.progress is not None

        def call(
            bridged: Asker, progress: ProgressCallback, log: LogCallback
        ) -> Awaitable[types.CallToolResult | types.InputRequiredResult]:
            relayed = dataclasses.replace(
                channel, progress=progress if wants_progress else None, log=log, asker=bridged
            )
            return self._run_call(principal, params, relayed)

        return await self.bridge.start(
            principal,
            params,
            capabilities,
            call,
            (channel.progress, channel.log),
            self._call_timeout(params.name),
        )

    def _call_timeout(self, tool: str) -> float:
        entry = self.pool.catalog.tools.get(tool)
        connection = self.pool.connections.get(entry.upstream) if entry is not None else None
        return connection.config.call_timeout if connection is not None else math.inf

    def _asks_during_calls(self, tool: str) -> bool:
        """Whether the tool's upstream may ask during a call (then the call is bridged);
        an unknown tool goes the usual way, to be refused there."""
        entry = self.pool.catalog.tools.get(tool)
        connection = self.pool.connections.get(entry.upstream) if entry is not None else None
        return connection is not None and connection.asks_during_calls

    async def _run_call(
        self, principal: Principal, params: types.CallToolRequestParams, channel: CallChannel
    ) -> types.CallToolResult | types.InputRequiredResult:
        context = self.views.context(principal)
        outcome = await self.service.call(
            context, ToolCall(params.name, params.arguments or {}), channel
        )
        if isinstance(outcome, Completed):
            return outcome.result
        return _answer_failure(params.name, outcome)

    def log_level(self, connection: Connection) -> types.LoggingLevel:
        """The level a handshake-era session's logs are relayed at: every level until the
        client sets one (logging/setLevel)."""
        return self._levels.get(connection, "debug")

    async def set_logging_level(
        self, ctx: ServerRequestContext[Any], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        self._levels[connection_of(ctx.session)] = params.level
        return types.EmptyResult()

    async def complete(
        self, _ctx: ServerRequestContext[Any], params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        """Completion of a prompt's or resource template's argument, by the upstream that
        offers it (under its own name); the gateway's own `context` takes no arguments."""
        view, ref = self.view(), params.ref
        argument = {"name": params.argument.name, "value": params.argument.value}
        context = params.context.arguments if params.context else None
        if isinstance(ref, types.PromptReference):
            if not view.shows_prompt(ref.name):
                raise MCPError(types.INVALID_PARAMS, f"Unknown prompt: {ref.name}")
            entry = view.catalog.prompts[ref.name]
            upstream, ref = entry.upstream, ref.model_copy(update={"name": entry.prompt.name})
        else:
            found = view.template_upstream(ref.uri)
            if found is None:
                raise MCPError(types.INVALID_PARAMS, f"Unknown resource template: {ref.uri}")
            upstream = found
        try:
            return unstamped(await self.pool.complete(upstream, ref, argument, context))
        except UpstreamError as exc:
            raise MCPError(types.INTERNAL_ERROR, str(exc)) from None

    async def subscribe_resource(
        self, ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        """Handshake era: `resources/updated` for `uri` on this session from now on."""
        uri = str(params.uri)
        if uri == CONTEXT_URI:
            return types.EmptyResult()  # changes with the tags: list_changed says so
        if not self.view().shows_resource(uri):
            raise _resource_not_found(ctx, uri)
        connection = connection_of(ctx.session)
        key = id(connection)
        if key not in self._following:
            self._following.add(key)
            # Forget this session's subscriptions when it closes.
            connection.exit_stack.callback(self._forget, key)
        session = ctx.session

        async def tell(updated: str) -> None:
            await session.send_resource_updated(updated)

        try:
            await self.audience.followers.follow(key, uri, tell)
        except UpstreamError as exc:
            raise MCPError(types.INTERNAL_ERROR, str(exc)) from None
        return types.EmptyResult()

    async def unsubscribe_resource(
        self, ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        await self.audience.followers.unfollow(id(connection_of(ctx.session)), str(params.uri))
        return types.EmptyResult()

    def _forget(self, key: int) -> None:
        self._following.discard(key)
        self.audience.followers.forget(key)

    async def list_resources(
        self, _ctx: ServerRequestContext[Any], _params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=list(self.view().resources))

    async def list_resource_templates(
        self, _ctx: ServerRequestContext[Any], _params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=list(self.view().templates))

    async def read_resource(
        self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        view, uri = self.view(), str(params.uri)
        if uri == CONTEXT_URI:
            text = types.TextResourceContents(
                uri=uri, mime_type="text/markdown", text=context_text(view.context)
            )
            return types.ReadResourceResult(contents=[text])
        if not view.shows_resource(uri):
            raise _resource_not_found(ctx, uri)
        try:
            return unstamped(await self.pool.read_resource(uri))
        except UpstreamError as exc:
            raise MCPError(types.INTERNAL_ERROR, str(exc)) from None

    async def list_prompts(
        self, _ctx: ServerRequestContext[Any], _params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=list(self.view().prompts))

    async def get_prompt(
        self, _ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        view = self.view()
        if params.name == CONTEXT_PROMPT:
            text = types.TextContent(type="text", text=context_text(view.context))
            return types.GetPromptResult(
                description="Your instructions, from your organisation's tags",
                messages=[types.PromptMessage(role="user", content=text)],
            )
        if not view.shows_prompt(params.name):
            raise MCPError(types.INVALID_PARAMS, f"Unknown prompt: {params.name}")
        try:
            return unstamped(await self.pool.get_prompt(params.name, params.arguments or {}))
        except UpstreamError as exc:
            raise MCPError(types.INTERNAL_ERROR, str(exc)) from None


def _unknown_tool(name: str) -> MCPError:
    return MCPError(types.INVALID_PARAMS, f"Unknown tool: {name}")


def _resource_not_found(ctx: ServerRequestContext[Any], uri: str) -> MCPError:
    """A resource the caller may not see is answered as one that does not exist, in the
    code of the caller's era, naming the URI (data.uri) as both eras' specifications show."""
    handshake = ctx.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS
    code = RESOURCE_NOT_FOUND if handshake else types.INVALID_PARAMS
    return MCPError(code, f"Resource not found: {uri}", {"uri": uri})


def _round(
    params: types.CallToolRequestParams, capabilities: types.ClientCapabilities | None
) -> InputRound:
    return InputRound(params.input_responses, params.request_state, capabilities)


def _answer_failure(tool: str, outcome: Refused | Failed) -> types.CallToolResult:
    """A call that did not complete, as an MCP caller is told (see the module docstring):
    a tool it may not use is unknown to it; arguments JSON cannot carry are invalid
    params; an upstream's JSON-RPC error is passed on; anything else is a tool error,
    which a model can act on."""
    error = outcome.error
    if isinstance(error, PermissionDenied):
        if error.decision.outcome is Outcome.OUT_OF_SCOPE:
            return _tool_error(f"{tool}: not permitted: {error.decision.reason}")
        raise _unknown_tool(tool) from None
    if isinstance(error, UnknownTool):
        raise _unknown_tool(tool) from None
    if isinstance(error, MalformedArguments):
        raise MCPError(types.INVALID_PARAMS, str(error)) from None
    if isinstance(error, UpstreamRejected):
        raise MCPError(error.code, error.message, error.data) from None
    return _tool_error(str(error))


def _tool_error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)
