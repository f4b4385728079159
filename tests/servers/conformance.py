"""An MCP server that implements what the official conformance suite asks of a server.

The suite (`@modelcontextprotocol/conformance`, `conformance server --url ...`) calls fixed
tool, resource and prompt names and checks their answers; this server provides them with the
SDK's lowlevel `Server`, so the gateway can be tested against it directly or as an upstream:

    python -m tests.servers.conformance stdio
    python -m tests.servers.conformance http PORT    (streamable HTTP at /mcp on 127.0.0.1:
                                                      stateful, SSE responses, resumable)

Run from the repository root with PYTHONPATH set to it.

Tools: `test_simple_text`, `test_image_content`, `test_audio_content`,
`test_embedded_resource`, `test_multiple_content_types`, `test_tool_with_logging`,
`test_error_handling`, `test_tool_with_progress`, `test_sampling` (`prompt`),
`test_elicitation` (`message`), `test_elicitation_sep1034_defaults`,
`test_elicitation_sep1330_enums`, `json_schema_2020_12_tool`, `test_reconnection` (closes
its SSE stream mid-call when the client can resume), and two that exist for the gateway's
own tests: `test_update_watched_resource` (`text`: changes test://watched-resource and tells
its subscribers) and `test_list_changed` (`kind`: tools, resources or prompts; adds or
removes a dynamic entry of that kind and announces the change). For the suite's 2026-07-28
scenarios: `test_trigger_tool_change` and `test_trigger_prompt_change` (test_list_changed of
one kind), `test_header_param` (`region`, marked `x-mcp-header`), and the input-required-result
tools and stateless diagnostics of conformance_next.py.

Resources: test://static-text, test://static-binary, test://watched-resource (subscribable)
and the template test://template/{id}/data. Prompts: `test_simple_prompt`,
`test_prompt_with_arguments` (`arg1`, `arg2`), `test_prompt_with_embedded_resource`
(`resourceUri`), `test_prompt_with_image`, `test_input_required_result_prompt`
(conformance_next.py). Completion for `arg1`/`arg2` and `{id}`.
`logging/setLevel` filters the log messages of later calls on the same connection.

Sampling and elicitation work in both protocol eras: in the handshake era (2025-06-18,
2025-11-25) the tool sends the request to the client during the call; in the 2026-07-28 era
(where server-to-client requests are forbidden) it returns an `InputRequiredResult` and
reads the answer from `input_responses` when the client retries the call.
"""

from __future__ import annotations

import contextlib
import json
import sys
import uuid
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import anyio
import mcp_types as types
from mcp import MCPError
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.connection import Connection
from mcp.server.context import CallNext, HandlerResult
from mcp.server.session import ServerSession
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
)
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from gateway.sdk_internals import connection_of
from tests.servers import conformance_next

# A 1x1 red PNG and a WAV of 8 silent samples (8 kHz, mono, 16 bit): the smallest valid
# files, so that clients that decode the content do not choke on it.
PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)
WAV_BASE64 = "UklGRjQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YRAAAAAAAAAAAAAAAAAAAAAAAAAA"

LOG_LEVELS: tuple[types.LoggingLevel, ...] = (
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
)
LOG_LEVEL_KEY = "conformance.log_level"  # keys in Connection.state
SUBSCRIPTIONS_KEY = "conformance.subscriptions"

WATCHED_URI = "test://watched-resource"
DYNAMIC_TOOL = "test_dynamic_tool"
DYNAMIC_RESOURCE = "test://dynamic-resource"
DYNAMIC_PROMPT = "test_dynamic_prompt"

NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}}


def _text(text: str) -> types.TextContent:
    return types.TextContent(type="text", text=text)


def _result(text: str, *, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[_text(text)], is_error=is_error)


def _string_arguments(names: dict[str, str]) -> dict[str, Any]:
    """An input schema with required string arguments (name -> description)."""
    return {
        "type": "object",
        "properties": {n: {"type": "string", "description": d} for n, d in names.items()},
        "required": list(names),
    }


def _modern(ctx: ServerRequestContext) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def _connection(ctx: ServerRequestContext) -> Connection:
    # SDK 2.3 has no public way from a handler to its Connection (where per-connection
    # state and the standalone channel live): the gateway's adapter reaches it.
    return connection_of(ctx.session)


class State:
    """What the tools can change: the watched resource and the dynamic entries."""

    def __init__(self) -> None:
        self.watched_text = "Watched resource content: version 0"
        self.watched_version = 0
        self.dynamic: set[str] = set()  # the kinds ("tools", ...) whose dynamic entry exists


state = State()
bus = InMemorySubscriptionBus()  # 2026-07-28 clients hear of changes through subscriptions/listen


class Connections:
    """Middleware that remembers every handshake-era connection, so that a change made by one
    caller can be announced to all of them (list_changed) or to those that subscribed to a
    resource (resources/updated). The 2026-07-28 era needs none of this: it uses `bus`."""

    def __init__(self) -> None:
        self.live: dict[int, ServerSession] = {}

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.method == "notifications/initialized":
            conn = _connection(ctx)
            if id(conn) not in self.live:
                self.live[id(conn)] = ctx.session
                conn.exit_stack.callback(self.live.pop, id(conn), None)  # runs when it closes
        return await call_next(ctx)

    async def notify(self, send: Callable[[ServerSession], Awaitable[None]]) -> None:
        """Send on each connection's standalone channel (on HTTP: its GET stream)."""
        for session in list(self.live.values()):
            # A connection closing meanwhile must not fail the caller's tool; its
            # exit-stack callback will forget it.
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                await send(session)

    async def resource_updated(self, uri: str) -> None:
        async def send(session: ServerSession) -> None:
            if uri in connection_of(session).state.get(SUBSCRIPTIONS_KEY, set()):
                await session.send_resource_updated(uri)

        await self.notify(send)


connections = Connections()


# --- logging, in both eras ---------------------------------------------------------------


async def log(ctx: ServerRequestContext, level: types.LoggingLevel, message: str) -> None:
    """Send a log message tied to this call, honouring the connection's logging/setLevel.

    In the 2026-07-28 era the SDK itself drops messages the request did not opt in to."""
    minimum = _connection(ctx).state.get(LOG_LEVEL_KEY, "debug")
    if not _modern(ctx) and LOG_LEVELS.index(level) < LOG_LEVELS.index(minimum):
        return
    with warnings.catch_warnings():
        # Logging is deprecated in 2026-07-28 but is how the handshake era reports; the
        # warning is raised when the coroutine is created, so awaiting outside is safe.
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        sending = ctx.session.send_log_message(
            level, message, logger="conformance", related_request_id=ctx.request_id
        )
    await sending


async def set_logging_level(
    ctx: ServerRequestContext, params: types.SetLevelRequestParams
) -> types.EmptyResult:
    _connection(ctx).state[LOG_LEVEL_KEY] = params.level
    return types.EmptyResult()


# --- sampling and elicitation, in both eras ----------------------------------------------


class Refused(Exception):
    """The client cannot or will not answer; the message says why."""


def _check_capability(ctx: ServerRequestContext, capability: types.ClientCapabilities) -> None:
    if not ctx.session.check_client_capability(capability):
        what = "sampling" if capability.sampling is not None else "elicitation"
        raise Refused(f"the client does not support {what}")


async def sample(
    ctx: ServerRequestContext, params: types.CallToolRequestParams, prompt: str
) -> str | types.InputRequiredResult:
    """Ask the client's model; its answer, or (2026-07-28, first round) the question to return."""
    _check_capability(ctx, types.ClientCapabilities(sampling=types.SamplingCapability()))
    message = types.SamplingMessage(role="user", content=_text(prompt))
    if _modern(ctx):
        answer = (params.input_responses or {}).get("sampling")
        if answer is None:
            question = types.CreateMessageRequestParams(messages=[message], max_tokens=100)
            return types.InputRequiredResult(
                input_requests={"sampling": types.CreateMessageRequest(params=question)},
                request_state=params.name,  # opaque to the client, echoed on the retry
            )
        if not isinstance(answer, types.CreateMessageResult | types.CreateMessageResultWithTools):
            raise Refused(f"expected a sampling result, got {type(answer).__name__}")
        result = answer
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)  # see log()
                asking = ctx.session.create_message(
                    [message], max_tokens=100, related_request_id=ctx.request_id
                )
            result = await asking
        except MCPError as exc:  # includes NoBackChannelError (stateless or JSON-only HTTP)
            raise Refused(exc.error.message) from exc
    blocks = result.content if isinstance(result.content, list) else [result.content]
    return " ".join(b.text for b in blocks if isinstance(b, types.TextContent))


async def elicit(
    ctx: ServerRequestContext,
    params: types.CallToolRequestParams,
    message: str,
    schema: dict[str, Any],
) -> types.ElicitResult | types.InputRequiredResult:
    """Ask the user through the client; like `sample`."""
    _check_capability(ctx, types.ClientCapabilities(elicitation=types.ElicitationCapability()))
    if _modern(ctx):
        answer = (params.input_responses or {}).get("elicitation")
        if answer is None:
            form = types.ElicitRequestFormParams(message=message, requested_schema=schema)
            return types.InputRequiredResult(
                input_requests={"elicitation": types.ElicitRequest(params=form)},
                request_state=params.name,
            )
        if not isinstance(answer, types.ElicitResult):
            raise Refused(f"expected an elicitation result, got {type(answer).__name__}")
        return answer
    try:
        return await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
    except MCPError as exc:
        raise Refused(exc.error.message) from exc


def _described(answer: types.ElicitResult) -> str:
    return f"action={answer.action}, content={json.dumps(answer.content)}"


# --- tools -------------------------------------------------------------------------------

ToolResult = types.CallToolResult | types.InputRequiredResult
ToolFunction = Callable[
    [ServerRequestContext, types.CallToolRequestParams, dict[str, Any]], Awaitable[ToolResult]
]


async def simple_text(
    _ctx: ServerRequestContext, _params: types.CallToolRequestParams, _args: dict[str, Any]
) -> ToolResult:
    return _result("This is a simple text response for testing.")


async def image_content(
    _ctx: ServerRequestContext, _params: types.CallToolRequestParams, _args: dict[str, Any]
) -> ToolResult:
    image = types.ImageContent(type="image", data=PNG_BASE64, mime_type="image/png")
    return types.CallToolResult(content=[image])


async def audio_content(
    _ctx: ServerRequestContext, _params: types.CallToolRequestParams, _args: dict[str, Any]
) -> ToolResult:
    audio = types.AudioContent(type="audio", data=WAV_BASE64, mime_type="audio/wav")
    return types.CallToolResult(content=[audio])


def _embedded(uri: str, mime_type: str, text: str) -> types.EmbeddedResource:
    contents = types.TextResourceContents(uri=uri, mime_type=mime_type, text=text)
    return types.EmbeddedResource(type="resource", resource=contents)


async def embedded_resource(
    _ctx: ServerRequestContext, _params: types.CallToolRequestParams, _args: dict[str, Any]
) -> ToolResult:
    resource = _embedded(
        "test://embedded-resource", "text/plain", "This is an embedded resource content."
    )
    return types.CallToolResult(content=[resource])


async def multiple_content_types(
    _ctx: ServerRequestContext, _params: types.CallToolRequestParams, _args: dict[str, Any]
) -> ToolResult:
    data = json.dumps({"test": "data", "value": 123}, separators=(",", ":"))
    return types.CallToolResult(
        content=[
            _text("Multiple content types test:"),
            types.ImageContent(type="image", data=PNG_BASE64, mime_type="image/png"),
            _embedded("test://mixed-content-resource", "application/json", data),
        ]
    )


async def tool_with_logging(
    ctx: ServerRequestContext, _params: types.CallToolRequestParams, _args: dict[str, Any]
) -> ToolResult:
    # The pauses let the client see the messages arrive one by one during the call.
    await log(ctx, "info", "Tool execution started")
    await anyio.sleep(0.05)
    await log(ctx, "info", "Tool processing data")
    await anyio.sleep(0.05)
    await log(ctx, "info", "Tool execution completed")
    return _result("Tool with logging executed successfully")


async def error_handling(
    _ctx: ServerRequestContext, _params: types.CallToolRequestParams, _args: dict[str, Any]
) -> ToolResult:
    # A tool error (isError) is for the model to see; a JSON-RPC error would mean the call
    # itself was wrong.
    return _result("This tool intentionally returns an error for testing", is_error=True)


async def tool_with_progress(
    ctx: ServerRequestContext, _params: types.CallToolRequestParams, _args: dict[str, Any]
) -> ToolResult:
    # report_progress does nothing when the caller sent no progress token.
    for step in (0, 50, 100):
        if step:
            await anyio.sleep(0.05)
        await ctx.session.report_progress(step, 100, f"{step}% done")
    return _result("Tool with progress executed successfully")


async def sampling(
    ctx: ServerRequestContext, params: types.CallToolRequestParams, args: dict[str, Any]
) -> ToolResult:
    said = await sample(ctx, params, str(args.get("prompt", "")))
    if isinstance(said, types.InputRequiredResult):
        return said
    return _result(f"LLM response: {said}")


ELICITATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"},
    },
    "required": ["username", "email"],
}

SEP1034_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "Your name", "default": "John Doe"},
        "age": {"type": "integer", "description": "Your age", "default": 30},
        "score": {"type": "number", "description": "Your score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "Your status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verified?", "default": True},
    },
}


def _choices(prefix: str, titles: list[str]) -> list[dict[str, str]]:
    return [{"const": f"{prefix}{i}", "title": t} for i, t in enumerate(titles, 1)]


SEP1330_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "untitledSingle": {
            "type": "string",
            "description": "Untitled single-select",
            "enum": ["option1", "option2", "option3"],
        },
        "titledSingle": {
            "type": "string",
            "description": "Titled single-select",
            "oneOf": _choices("value", ["First Option", "Second Option", "Third Option"]),
        },
        "legacyEnum": {  # the deprecated way to give titles, still valid
            "type": "string",
            "description": "Legacy titled single-select",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "description": "Untitled multi-select",
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "description": "Titled multi-select",
            "items": {
                "anyOf": _choices("value", ["First Choice", "Second Choice", "Third Choice"])
            },
        },
    },
}


async def elicitation(
    ctx: ServerRequestContext, params: types.CallToolRequestParams, args: dict[str, Any]
) -> ToolResult:
    answer = await elicit(ctx, params, str(args.get("message", "")), ELICITATION_SCHEMA)
    if isinstance(answer, types.InputRequiredResult):
        return answer
    return _result(f"User response: {_described(answer)}")


def _elicits(message: str, schema: dict[str, Any]) -> ToolFunction:
    """A tool that only asks `schema` and reports the answer."""

    async def tool(
        ctx: ServerRequestContext, params: types.CallToolRequestParams, _args: dict[str, Any]
    ) -> ToolResult:
        answer = await elicit(ctx, params, message, schema)
        if isinstance(answer, types.InputRequiredResult):
            return answer
        return _result(f"Elicitation completed: {_described(answer)}")

    return tool


async def json_schema_tool(
    _ctx: ServerRequestContext, _params: types.CallToolRequestParams, args: dict[str, Any]
) -> ToolResult:
    return _result(f"Received: {json.dumps(args, sort_keys=True)}")


async def reconnection(
    ctx: ServerRequestContext, _params: types.CallToolRequestParams, _args: dict[str, Any]
) -> ToolResult:
    # SEP-1699 polling: end this call's SSE stream before answering, so that the client
    # reconnects with Last-Event-ID and gets the answer from the event store. The SDK
    # offers close_sse_stream only to clients that can resume (2025-11-25 and later).
    if ctx.close_sse_stream is not None:
        await anyio.sleep(0.1)
        await ctx.close_sse_stream()
        await anyio.sleep(0.2)
    return _result("Reconnection test completed")


async def update_watched_resource(
    ctx: ServerRequestContext, _params: types.CallToolRequestParams, args: dict[str, Any]
) -> ToolResult:
    state.watched_version += 1
    default = f"Watched resource content: version {state.watched_version}"
    state.watched_text = str(args.get("text") or default)
    await bus.publish(ResourceUpdated(uri=WATCHED_URI))
    await connections.resource_updated(WATCHED_URI)
    return _result(f"Updated {WATCHED_URI}")


async def list_changed(
    ctx: ServerRequestContext, _params: types.CallToolRequestParams, args: dict[str, Any]
) -> ToolResult:
    kind = str(args.get("kind", "tools"))
    announce: dict[str, tuple[ServerEvent, Callable[[ServerSession], Awaitable[None]]]] = {
        "tools": (ToolsListChanged(), ServerSession.send_tool_list_changed),
        "resources": (ResourcesListChanged(), ServerSession.send_resource_list_changed),
        "prompts": (PromptsListChanged(), ServerSession.send_prompt_list_changed),
    }
    if kind not in announce:
        return _result(f"Unknown kind {kind!r}: use tools, resources or prompts", is_error=True)
    state.dynamic ^= {kind}
    event, send = announce[kind]
    await bus.publish(event)
    await connections.notify(send)
    return _result(f"{kind}: dynamic entry {'added' if kind in state.dynamic else 'removed'}")


def _triggers(kind: str) -> ToolFunction:
    """test_list_changed for one kind: the hooks the suite's server-stateless scenario calls
    to see a change announced on a subscriptions/listen stream."""

    async def tool(
        ctx: ServerRequestContext, params: types.CallToolRequestParams, _args: dict[str, Any]
    ) -> ToolResult:
        return await list_changed(ctx, params, {"kind": kind})

    return tool


async def header_param(
    _ctx: ServerRequestContext, _params: types.CallToolRequestParams, args: dict[str, Any]
) -> ToolResult:
    return _result(f"Region: {args.get('region')}")


async def dynamic_tool(
    _ctx: ServerRequestContext, _params: types.CallToolRequestParams, _args: dict[str, Any]
) -> ToolResult:
    return _result("This tool exists only while test_list_changed added it.")


# What the suite's json-schema-2020-12 scenario expects listed unchanged: SEP-1613's keywords
# and SEP-2106's ($anchor, allOf/anyOf, if/then/else).
JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


def _tool(name: str, description: str, schema: dict[str, Any] = NO_ARGUMENTS) -> types.Tool:
    return types.Tool(name=name, description=description, input_schema=schema)


TOOLS: dict[str, tuple[types.Tool, ToolFunction]] = {
    tool.name: (tool, function)
    for tool, function in [
        (_tool("test_simple_text", "Returns simple text"), simple_text),
        (_tool("test_image_content", "Returns a PNG image"), image_content),
        (_tool("test_audio_content", "Returns a WAV sound"), audio_content),
        (_tool("test_embedded_resource", "Returns an embedded resource"), embedded_resource),
        (
            _tool("test_multiple_content_types", "Returns text, image and resource"),
            multiple_content_types,
        ),
        (_tool("test_tool_with_logging", "Logs three messages while running"), tool_with_logging),
        (_tool("test_error_handling", "Always fails (isError)"), error_handling),
        (_tool("test_tool_with_progress", "Reports progress 0, 50, 100"), tool_with_progress),
        (
            _tool(
                "test_sampling",
                "Asks the client's model (sampling)",
                _string_arguments({"prompt": "The prompt to send to the LLM"}),
            ),
            sampling,
        ),
        (
            _tool(
                "test_elicitation",
                "Asks the user for a username and email (elicitation)",
                _string_arguments({"message": "The message to show the user"}),
            ),
            elicitation,
        ),
        (
            _tool("test_elicitation_sep1034_defaults", "Elicits fields that have defaults"),
            _elicits("Please review and update the form fields with defaults", SEP1034_SCHEMA),
        ),
        (
            _tool("test_elicitation_sep1330_enums", "Elicits the five kinds of enum"),
            _elicits("Please select options from the enum fields", SEP1330_SCHEMA),
        ),
        (
            _tool(
                "json_schema_2020_12_tool",
                "Tool with JSON Schema 2020-12 features",
                JSON_SCHEMA_2020_12,
            ),
            json_schema_tool,
        ),
        (_tool("test_reconnection", "Closes its SSE stream before answering"), reconnection),
        (
            _tool(
                "test_update_watched_resource",
                f"Changes {WATCHED_URI} and notifies its subscribers",
                {"type": "object", "properties": {"text": {"type": "string"}}},
            ),
            update_watched_resource,
        ),
        (
            _tool(
                "test_list_changed",
                "Adds or removes a dynamic tool, resource or prompt and announces it",
                {
                    "type": "object",
                    "properties": {
                        "kind": {"type": "string", "enum": ["tools", "resources", "prompts"]}
                    },
                },
            ),
            list_changed,
        ),
        (_tool("test_trigger_tool_change", "Adds or removes the dynamic tool"), _triggers("tools")),
        (
            _tool("test_trigger_prompt_change", "Adds or removes the dynamic prompt"),
            _triggers("prompts"),
        ),
        (
            # SEP-2243: a 2026-07-28 HTTP client mirrors `region` into an Mcp-Param-Region
            # header, which the server checks against the body.
            _tool(
                "test_header_param",
                "Echoes its region, which travels as the Mcp-Param-Region header too",
                {
                    "type": "object",
                    "properties": {"region": {"type": "string", "x-mcp-header": "Region"}},
                    "required": ["region"],
                },
            ),
            header_param,
        ),
        *conformance_next.TOOLS,
    ]
}
DYNAMIC_TOOL_ENTRY = (_tool(DYNAMIC_TOOL, "A tool added by test_list_changed"), dynamic_tool)


def _current_tools() -> dict[str, tuple[types.Tool, ToolFunction]]:
    if "tools" in state.dynamic:
        return {**TOOLS, DYNAMIC_TOOL: DYNAMIC_TOOL_ENTRY}
    return TOOLS


def tool_input_schema(name: str) -> Mapping[str, Any] | None:
    # Spares the SDK a tools/list per 2026-07-28 HTTP call (it checks Mcp-Param headers).
    entry = _current_tools().get(name)
    return entry[0].input_schema if entry else None


async def list_tools(
    _ctx: ServerRequestContext, _params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[tool for tool, _ in _current_tools().values()])


async def call_tool(
    ctx: ServerRequestContext, params: types.CallToolRequestParams
) -> types.CallToolResult | types.InputRequiredResult:
    entry = _current_tools().get(params.name)
    if entry is None:
        raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {params.name}")
    try:
        return await entry[1](ctx, params, dict(params.arguments or {}))
    except Refused as exc:  # the spec asks for an error result when the client cannot answer
        return _result(f"{params.name} failed: {exc}", is_error=True)


# --- resources ---------------------------------------------------------------------------

RESOURCES = [
    types.Resource(
        uri="test://static-text",
        name="static-text",
        description="A static text resource",
        mime_type="text/plain",
    ),
    types.Resource(
        uri="test://static-binary",
        name="static-binary",
        description="A static binary resource (a PNG image)",
        mime_type="image/png",
    ),
    types.Resource(
        uri=WATCHED_URI,
        name="watched-resource",
        description="A resource to subscribe to; test_update_watched_resource changes it",
        mime_type="text/plain",
    ),
]
DYNAMIC_RESOURCE_ENTRY = types.Resource(
    uri=DYNAMIC_RESOURCE,
    name="dynamic-resource",
    description="A resource added by test_list_changed",
    mime_type="text/plain",
)
TEMPLATE_PREFIX, TEMPLATE_SUFFIX = "test://template/", "/data"


async def list_resources(
    _ctx: ServerRequestContext, _params: types.PaginatedRequestParams | None
) -> types.ListResourcesResult:
    dynamic = [DYNAMIC_RESOURCE_ENTRY] if "resources" in state.dynamic else []
    return types.ListResourcesResult(resources=RESOURCES + dynamic)


async def list_templates(
    _ctx: ServerRequestContext, _params: types.PaginatedRequestParams | None
) -> types.ListResourceTemplatesResult:
    template = types.ResourceTemplate(
        uri_template=f"{TEMPLATE_PREFIX}{{id}}{TEMPLATE_SUFFIX}",
        name="template",
        description="Data for the id in the URI",
        mime_type="application/json",
    )
    return types.ListResourceTemplatesResult(resource_templates=[template])


def _text_contents(uri: str, mime_type: str, text: str) -> types.ReadResourceResult:
    contents = types.TextResourceContents(uri=uri, mime_type=mime_type, text=text)
    return types.ReadResourceResult(contents=[contents])


async def read_resource(
    _ctx: ServerRequestContext, params: types.ReadResourceRequestParams
) -> types.ReadResourceResult:
    uri = params.uri
    if uri == "test://static-text":
        return _text_contents(uri, "text/plain", "This is the content of the static text resource.")
    if uri == "test://static-binary":
        blob = types.BlobResourceContents(uri=uri, mime_type="image/png", blob=PNG_BASE64)
        return types.ReadResourceResult(contents=[blob])
    if uri == WATCHED_URI:
        return _text_contents(uri, "text/plain", state.watched_text)
    if uri == DYNAMIC_RESOURCE and "resources" in state.dynamic:
        return _text_contents(uri, "text/plain", "This resource exists while it is listed.")
    if uri.startswith(TEMPLATE_PREFIX) and uri.endswith(TEMPLATE_SUFFIX):
        id_ = uri[len(TEMPLATE_PREFIX) : -len(TEMPLATE_SUFFIX)]
        if id_ and "/" not in id_:
            data = {"id": id_, "templateTest": True, "data": f"Data for ID: {id_}"}
            text = json.dumps(data, separators=(",", ":"))
            return _text_contents(uri, "application/json", text)
    # -32602 is what the current spec asks for an unknown resource (SEP-2164), naming it.
    raise MCPError(
        code=types.INVALID_PARAMS, message=f"Resource not found: {uri}", data={"uri": uri}
    )


async def subscribe(
    ctx: ServerRequestContext, params: types.SubscribeRequestParams
) -> types.EmptyResult:
    # Handshake era only; 2026-07-28 clients subscribe with subscriptions/listen.
    _connection(ctx).state.setdefault(SUBSCRIPTIONS_KEY, set()).add(params.uri)
    return types.EmptyResult()


async def unsubscribe(
    ctx: ServerRequestContext, params: types.UnsubscribeRequestParams
) -> types.EmptyResult:
    _connection(ctx).state.get(SUBSCRIPTIONS_KEY, set()).discard(params.uri)
    return types.EmptyResult()


# --- prompts -----------------------------------------------------------------------------


def _argument(name: str, description: str) -> types.PromptArgument:
    return types.PromptArgument(name=name, description=description, required=True)


PROMPTS = [
    types.Prompt(name="test_simple_prompt", description="A prompt without arguments"),
    types.Prompt(
        name="test_prompt_with_arguments",
        description="A prompt with two arguments",
        arguments=[
            _argument("arg1", "First test argument"),
            _argument("arg2", "Second test argument"),
        ],
    ),
    types.Prompt(
        name="test_prompt_with_embedded_resource",
        description="A prompt that embeds a resource",
        arguments=[_argument("resourceUri", "URI of the resource to embed")],
    ),
    types.Prompt(name="test_prompt_with_image", description="A prompt with an image"),
    conformance_next.PROMPT_ENTRY,
]
DYNAMIC_PROMPT_ENTRY = types.Prompt(
    name=DYNAMIC_PROMPT, description="A prompt added by test_list_changed"
)


def _user(content: types.ContentBlock) -> types.PromptMessage:
    return types.PromptMessage(role="user", content=content)


async def list_prompts(
    _ctx: ServerRequestContext, _params: types.PaginatedRequestParams | None
) -> types.ListPromptsResult:
    dynamic = [DYNAMIC_PROMPT_ENTRY] if "prompts" in state.dynamic else []
    return types.ListPromptsResult(prompts=PROMPTS + dynamic)


async def get_prompt(
    ctx: ServerRequestContext, params: types.GetPromptRequestParams
) -> types.GetPromptResult | types.InputRequiredResult:
    if params.name == conformance_next.PROMPT:
        return conformance_next.get_prompt(ctx, params)
    args = params.arguments or {}
    prompt = next((p for p in [*PROMPTS, DYNAMIC_PROMPT_ENTRY] if p.name == params.name), None)
    if prompt is None or (prompt is DYNAMIC_PROMPT_ENTRY and "prompts" not in state.dynamic):
        raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt: {params.name}")
    missing = [a.name for a in prompt.arguments or [] if a.required and a.name not in args]
    if missing:
        raise MCPError(code=types.INVALID_PARAMS, message=f"Missing arguments: {missing}")
    if params.name == "test_prompt_with_arguments":
        text = f"Prompt with arguments: arg1='{args['arg1']}', arg2='{args['arg2']}'"
        messages = [_user(_text(text))]
    elif params.name == "test_prompt_with_embedded_resource":
        resource = _embedded(
            args["resourceUri"], "text/plain", "Embedded resource content for testing."
        )
        messages = [_user(resource), _user(_text("Please process the embedded resource above."))]
    elif params.name == "test_prompt_with_image":
        image = types.ImageContent(type="image", data=PNG_BASE64, mime_type="image/png")
        messages = [_user(image), _user(_text("Please analyze the image above."))]
    elif params.name == DYNAMIC_PROMPT:
        messages = [_user(_text("This prompt exists while it is listed."))]
    else:
        messages = [_user(_text("This is a simple prompt for testing."))]
    return types.GetPromptResult(description=prompt.description, messages=messages)


# --- completion --------------------------------------------------------------------------

COMPLETIONS = {
    "arg1": ["paris", "park", "party", "test", "testing", "tested"],
    "arg2": ["world", "word", "work"],
    "id": ["1", "123", "42"],
}


async def complete(
    _ctx: ServerRequestContext, params: types.CompleteRequestParams
) -> types.CompleteResult:
    """Known values of the argument that start with what was typed so far."""
    ref = params.ref
    ours = (
        isinstance(ref, types.PromptReference) and ref.name == "test_prompt_with_arguments"
    ) or (
        isinstance(ref, types.ResourceTemplateReference)
        and ref.uri == f"{TEMPLATE_PREFIX}{{id}}{TEMPLATE_SUFFIX}"
    )
    known = COMPLETIONS.get(params.argument.name, []) if ours else []
    values = [v for v in known if v.startswith(params.argument.value)]
    return types.CompleteResult(
        completion=types.Completion(values=values, total=len(values), has_more=False)
    )


# --- the server --------------------------------------------------------------------------


class ConformanceServer(Server):
    def create_initialization_options(self, *args: Any, **kwargs: Any) -> Any:
        # The HTTP session manager calls this without arguments, and the SDK's default
        # declares no listChanged capability: declare the changes test_list_changed makes.
        kwargs.setdefault(
            "notification_options",
            NotificationOptions(tools_changed=True, resources_changed=True, prompts_changed=True),
        )
        return super().create_initialization_options(*args, **kwargs)


with warnings.catch_warnings():
    # on_set_logging_level warns that logging is deprecated in 2026-07-28; the handshake era,
    # which the conformance suite uses, still has logging/setLevel.
    warnings.simplefilter("ignore", MCPDeprecationWarning)
    server = ConformanceServer(
        "conformance-server",
        version="1.0.0",
        get_tool_input_schema=tool_input_schema,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
        on_subscribe_resource=subscribe,
        on_unsubscribe_resource=unsubscribe,
        on_subscriptions_listen=ListenHandler(bus),
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_completion=complete,
        on_set_logging_level=set_logging_level,
    )
server.middleware.append(connections)


class MemoryEventStore(EventStore):
    """Keeps the latest SSE events so a client whose stream closed can resume it by
    Last-Event-ID (SEP-1699). Event ids are random so that no session can guess another's."""

    def __init__(self, limit: int = 10_000) -> None:
        self._events: deque[tuple[EventId, StreamId, types.JSONRPCMessage | None]] = deque(
            maxlen=limit
        )

    async def store_event(
        self, stream_id: StreamId, message: types.JSONRPCMessage | None
    ) -> EventId:
        event_id = uuid.uuid4().hex
        self._events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        events = list(self._events)
        position = next((i for i, e in enumerate(events) if e[0] == last_event_id), None)
        if position is None:
            return None
        stream_id = events[position][1]
        for event_id, stream, message in events[position + 1 :]:
            if stream == stream_id and message is not None:  # None: a priming event
                await send_callback(EventMessage(message, event_id))
        return stream_id


async def serve_stdio() -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


def serve_http(port: int) -> None:
    import uvicorn

    # host="127.0.0.1" makes the SDK check Host and Origin (DNS-rebinding protection).
    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        host="127.0.0.1",
        event_store=MemoryEventStore(),
        retry_interval=1000,  # ms: how soon a client should reconnect to a closed stream
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def main(argv: list[str]) -> None:
    mode: Literal["stdio", "http"] | None = None
    if argv[:1] == ["stdio"] and len(argv) == 1:
        mode = "stdio"
    elif argv[:1] == ["http"] and len(argv) == 2 and argv[1].isdigit():
        mode = "http"
    if mode is None:
        sys.exit("usage: python -m tests.servers.conformance stdio | http PORT")
    if mode == "http":
        serve_http(int(argv[1]))
    else:
        anyio.run(serve_stdio)


if __name__ == "__main__":
    main(sys.argv[1:])
