"""`tools/call` and `tools/list` from a 2026-07-28 caller, served without the SDK's server
stack.

A proxied call is the gateway's hot path, and most of its CPU went to machinery around
the call: the SDK's per-request dispatch (a task per message, memory streams, a dispatch
context, middleware) on top of Starlette's. In the 2026-07-28 revision a call is one POST
answered by one response (JSON, or SSE when there is progress or a log to relay on the
way), with no session, so the gateway serves it here, in the request's own task. Everything
else stays with the SDK, except a handshake-era caller's calls on its session
(session_calls.py).

What this path does is what the SDK's modern entry does (`_streamable_http_modern`), built
from the same public pieces of the SDK where they exist (the Host/Origin, Content-Type and
Accept checks and the parse are http.py's, for every door): routing-header duplicates,
the envelope ladder (`classify_inbound_request`), `Mcp-Param-*` headers against the
caller's view of the tool's schema, parameter validation by the SDK's request surface, the
error ladder (`modern_error_data`) and HTTP statuses of JSON-RPC errors, the result's wire shape
(`serialize_server_result`, `resultType`, the gateway's serverInfo stamp), SSE from the
first notification on, a keepalive comment every 15 s of silence, and cancellation when
the caller closes the response stream. The call itself is `Front.run_call`, the same one
check, catalog, audit and result handling as the SDK door; a listing is the caller's view,
as the SDK door lists it, serialized once per view. tests/front/test_calls.py runs
the same calls through both doors and compares what the client receives.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, Final, Protocol, cast

import anyio
import mcp_types as types
from mcp.server.caching import apply_cache_hint
from mcp.server.runner import modern_error_data
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_PARAM_HEADER_PREFIX,
    MCP_PROTOCOL_VERSION_HEADER,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    find_invalid_x_mcp_header,
    validate_mcp_param_headers,
    x_mcp_header_map,
)
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CORE_RESULT_TYPES,
    LOG_LEVEL_META_KEY,
    SERVER_INFO_META_KEY,
)
from mcp_types import methods as _methods
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from .. import jsoncodec
from ..calls import CallChannel
from ..identitycache import IdentityCache
from ..principal import Principal
from ..upstreams.relay import LogCallback, ProgressCallback
from ..upstreams.requests import InputRound
from .askers import NoBackChannel
from .server import PER_CALLER, Front
from .views import View

logger = logging.getLogger("gateway.front")

LISTINGS_BUDGET: Final = 64 * 1024 * 1024
"""Bytes of serialized listings kept (see Listings)."""
PING_INTERVAL: Final = 15.0
"""Seconds of silence after which the response commits to SSE and sends a comment, so
that an idle-read timeout of a proxy in between does not end (and so cancel) the call."""

SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
]
JSON_TYPE: Final = (b"content-type", b"application/json")
_PARAM_PREFIX: Final = MCP_PARAM_HEADER_PREFIX.lower()
_MODERN: Final = frozenset(MODERN_PROTOCOL_VERSIONS)
_METHODS: Final = frozenset({"tools/call", "tools/list"})


def is_modern_tools_request(message: Any, headers: dict[str, str]) -> bool:
    """Whether a POST body (parsed) is a 2026-07-28 tools/call or tools/list request, which
    this module serves. Anything else (other methods, handshake-era callers, batches) goes
    to the SDK. `headers`: the request's, by lowercase name."""
    if headers.get(MCP_PROTOCOL_VERSION_HEADER) not in _MODERN:
        return False
    return is_tools_request(message)


def is_tools_request(message: Any) -> bool:
    """Whether `message` is a JSON-RPC 2.0 tools/call or tools/list request with a string
    or integer id (what the gateway's own doors may serve)."""
    if not isinstance(message, dict):
        return False
    request_id = message.get("id")
    return (
        message.get("method") in _METHODS
        and message.get("jsonrpc") == "2.0"
        and isinstance(request_id, str | int)
        and not isinstance(request_id, bool)
    )


class ModernCalls:
    def __init__(self, front: Front, listings: Listings) -> None:
        self._front = front
        # Read-only here: every answer is serialized before the next call could change it.
        self._stamp = front.server.server_info_stamp
        self._listings = listings
        self._annotated: IdentityCache[Mapping[str, Any], bool] = IdentityCache()
        """Whether an input schema declares `Mcp-Param-*` headers."""

    async def serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        call: dict[str, Any],
        headers: dict[str, str],
        principal: Principal,
    ) -> None:
        """Answer `principal`'s `call` (a request `is_modern_tools_request` with the same
        `headers`), authenticated and its headers checked already (http.py)."""
        request = Request(scope)
        request_id = call["id"]
        reply = _Reply(send, request_id)
        duplicated = find_duplicated_routing_header(request.headers.items())
        if duplicated is not None:
            error = types.ErrorData(
                code=types.HEADER_MISMATCH, message=f"{duplicated} header appears more than once"
            )
            await reply.finish_error(error)
            return
        verdict = classify_inbound_request(call, headers=headers)
        if isinstance(verdict, InboundLadderRejection):
            await reply.finish_error(_error_of(verdict))
            return
        raw_params = call.get("params")
        if call["method"] == "tools/list":
            await self._list_tools(reply, verdict.protocol_version, raw_params, principal)
            return
        rejection = self._param_headers(raw_params, headers, request, principal)
        if rejection is not None:  # before the parameters, as the SDK's entry does
            await reply.finish_error(_error_of(rejection))
            return
        try:
            parsed = _methods.parse_client_request(
                "tools/call", verdict.protocol_version, raw_params
            )
        except ValidationError as exc:
            await reply.finish_error(modern_error_data(exc))
            return
        params = cast(types.CallToolRequest, parsed).params
        meta = raw_params.get("_meta", {}) if isinstance(raw_params, dict) else {}
        token = progress_token_from_params(raw_params)
        level = cast("types.LoggingLevel | None", meta.get(LOG_LEVEL_META_KEY))

        progress, log = relays(reply, token)
        channel = CallChannel(
            progress=progress,
            log=log,
            log_level=level,
            asker=NoBackChannel(),
            input_round=InputRound(params.input_responses, params.request_state, _askable(meta)),
            owner=reply,  # this request alone
        )
        with anyio.CancelScope() as running, CallWatch(reply, receive, running):
            try:
                result = await self._front.run_call(principal, params, channel)
                answer = self._shape(verdict.protocol_version, "tools/call", result)
            except Exception as exc:  # the SDK's ladder decides what the caller may see
                await reply.finish_error(modern_error_data(exc))
            else:
                await reply.finish({"jsonrpc": "2.0", "id": request_id, "result": answer})

    def _param_headers(
        self, params: Any, headers: dict[str, str], request: Request, principal: Principal
    ) -> InboundLadderRejection | None:
        """`Mcp-Param-*` headers against the schema this caller was shown (on the raw
        parameters: their own validation comes after)."""
        if not isinstance(params, dict) or not isinstance(params.get("name"), str):
            return None
        arguments = params.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            return None
        arguments = arguments or {}
        if not arguments and not any(name.startswith(_PARAM_PREFIX) for name in headers):
            return None
        tool = self._front.views.view(principal).tools_by_name.get(params["name"])
        schema = tool.input_schema if tool is not None else None
        if schema is None:
            return None  # an unknown tool: the call answers that
        if not self._annotated.get(schema, _declares_headers):
            return None  # the SDK's check passes whatever the headers (it walks the schema)
        return validate_mcp_param_headers(schema, arguments, request.headers)

    async def _list_tools(
        self, reply: _Reply, version: str, params: Any, principal: Principal
    ) -> None:
        """The caller's tools (see Listings.tools)."""
        try:
            _methods.parse_client_request("tools/list", version, params)
        except ValidationError as exc:
            await reply.finish_error(modern_error_data(exc))
            return
        view = self._front.views.view(principal)
        body = self._listings.tools(view, version, partial(self._shape, version, "tools/list"))
        await reply.finish_result(body)

    def _shape(self, version: str, method: str, result: BaseModel) -> dict[str, Any]:
        """As the SDK's ServerRunner shapes a 2026-era result for the wire."""
        dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        result_type = dumped.get("resultType")
        if not isinstance(result_type, str) or result_type in CORE_RESULT_TYPES:
            dumped = _methods.serialize_server_result(method, version, dumped)
        if dumped.get("resultType") is None:
            dumped["resultType"] = "complete"
        meta = dumped.get("_meta")
        if meta is None:
            dumped["_meta"] = {SERVER_INFO_META_KEY: self._stamp}
        elif isinstance(meta, dict) and meta.get(SERVER_INFO_META_KEY) is None:
            dumped["_meta"] = {**meta, SERVER_INFO_META_KEY: self._stamp}
        return dumped


class Listings:
    """Serialized listings kept on their views, within a byte budget: a view per caller
    is cached (views.py), and a thousand tools serialize to some 300 KB, so without a
    bound ten thousand callers could hold gigabytes. The oldest go first."""

    def __init__(self, budget: int = LISTINGS_BUDGET) -> None:
        self.budget = budget
        self.size = 0
        self._kept: deque[tuple[dict[tuple[str, str], bytes], tuple[str, str], int]] = deque()

    def tools(
        self, view: View, version: str, shape: Callable[[types.ListToolsResult], dict[str, Any]]
    ) -> bytes:
        """`view`'s tools/list result for `version`, shaped for the wire by `shape`, as
        the SDK door lists them (Front.list_tools): serialized once per view, since a
        listing of a thousand tools costs the SDK 90 ms of CPU to shape each time, and a
        client may list on every turn."""
        key = ("tools/list", version)
        body = view.wire.get(key)
        if body is None:
            listing = types.ListToolsResult(tools=list(view.tools))
            body = jsoncodec.dumps(shape(apply_cache_hint(listing, PER_CALLER["tools/list"])))
            self.keep(view.wire, key, body)
        return body

    def keep(self, wire: dict[tuple[str, str], bytes], key: tuple[str, str], body: bytes) -> None:
        wire[key] = body
        self._kept.append((wire, key, len(body)))
        self.size += len(body)
        while self.size > self.budget and self._kept:
            old_wire, old_key, old_size = self._kept.popleft()
            old_wire.pop(old_key, None)
            self.size -= old_size


class _Evented(Protocol):
    async def event(self, method: str, params: dict[str, Any]) -> None: ...


def relays(
    reply: _Evented, token: types.ProgressToken | None
) -> tuple[ProgressCallback | None, LogCallback]:
    """A call's progress callback (none without a progress token) and log callback, which
    put what the upstream reports on `reply` as the SDK words it."""

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        note: dict[str, Any] = {"progressToken": token, "progress": progress}
        if total is not None:
            note["total"] = total
        if message is not None:
            note["message"] = message
        await reply.event("notifications/progress", note)

    async def log(note: types.LoggingMessageNotificationParams) -> None:
        dumped = note.model_dump(by_alias=True, mode="json", exclude_none=True)
        await reply.event("notifications/message", dumped)

    return (progress if token is not None else None), log


def _askable(meta: Any) -> types.ClientCapabilities | None:
    """The capabilities a 2026-07-28 request declares, when they say it may be asked
    (parsed only then: most callers declare neither sampling nor elicitation)."""
    declared = meta.get(CLIENT_CAPABILITIES_META_KEY) if isinstance(meta, dict) else None
    if not isinstance(declared, dict) or not ({"sampling", "elicitation"} & declared.keys()):
        return None
    try:
        return types.ClientCapabilities.model_validate(declared)
    except ValidationError:
        return None


def _declares_headers(schema: Mapping[str, Any]) -> bool:
    return find_invalid_x_mcp_header(schema) is None and bool(x_mcp_header_map(schema))


def _sse(data: bytes) -> bytes:
    """One JSON-RPC message as an SSE event, framed as the SDK frames it."""
    return b"event: message\r\ndata: " + data + b"\r\n\r\n"


def _error_of(rejection: InboundLadderRejection) -> types.ErrorData:
    return types.ErrorData(code=rejection.code, message=rejection.message, data=rejection.data)


class HeadOnce:
    """A response's head, sent once by whichever task gets there first (the call, or a
    keepalive's task). A task cancelled while sending it (sending may wait for the socket
    to drain) leaves the job to the next one instead of leaving it waiting for ever."""

    def __init__(self) -> None:
        self.sent = False
        self._sending: asyncio.Event | None = None

    @property
    def started(self) -> bool:
        return self.sent or self._sending is not None

    async def ensure(self, send_head: Callable[[], Awaitable[None]]) -> None:
        while not self.sent:
            if self._sending is not None:
                await self._sending.wait()
                continue
            sending = self._sending = asyncio.Event()
            try:
                await send_head()
                self.sent = True
            finally:
                self._sending = None
                sending.set()


class _Reply:
    """One response: JSON unless something is sent before the answer, SSE from then on."""

    def __init__(self, send: Send, request_id: types.RequestId) -> None:
        self._send = send
        self._id = request_id
        self._head = HeadOnce()
        self._finishing = False

    async def _sse_head(self) -> None:
        await self._send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})

    async def _commit_sse(self) -> None:
        await self._head.ensure(self._sse_head)

    async def event(self, method: str, params: dict[str, Any]) -> None:
        await self._commit_sse()
        data = jsoncodec.dumps({"jsonrpc": "2.0", "method": method, "params": params})
        await self._send({"type": "http.response.body", "body": _sse(data), "more_body": True})

    async def finish(self, message: dict[str, Any], status: int = 200) -> None:
        await self.finish_bytes(jsoncodec.dumps(message), status)

    async def finish_bytes(self, data: bytes, status: int = 200) -> None:
        self._finishing = True  # no keepalive from here on: the answer is being sent
        if self._head.started:
            await self._commit_sse()
            await self._send({"type": "http.response.body", "body": _sse(data), "more_body": False})
            return
        headers = [JSON_TYPE, (b"content-length", str(len(data)).encode())]
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": data, "more_body": False})

    async def finish_result(self, result: bytes) -> None:
        """The answer, its result already JSON."""
        head = b'{"jsonrpc":"2.0","id":' + jsoncodec.dumps(self._id) + b',"result":'
        await self.finish_bytes(head + result + b"}")

    async def finish_error(self, error: types.ErrorData) -> None:
        dumped = error.model_dump(by_alias=True, mode="json", exclude_none=True)
        message = {"jsonrpc": "2.0", "id": self._id, "error": dumped}
        await self.finish(message, ERROR_CODE_HTTP_STATUS.get(error.code, 200))

    async def ping(self) -> None:
        if self._finishing:
            return
        await self._commit_sse()
        await self._send(
            {"type": "http.response.body", "body": b": ping\r\n\r\n", "more_body": True}
        )


class _Pinged(Protocol):
    async def ping(self) -> None: ...


class CallWatch:
    """While a call runs: cancel it when the caller goes away (closing the response stream
    is how a 2026-07-28 caller cancels; without `receive`, as for a handshake-era call,
    a dropped connection is not a cancellation), and keep a silent response alive. On the
    loop's own primitives, not a task group: this runs for every call, and a task group
    with a watcher task cost the hot path more than the permission check."""

    def __init__(
        self,
        reply: _Pinged,
        receive: Receive | None,
        call: anyio.CancelScope,
        first: float | None = None,
    ) -> None:
        """`first`: seconds before the first `reply.ping()` (PING_INTERVAL unless given);
        PING_INTERVAL after that."""
        self._first = first
        self._reply = reply
        self._receive = receive
        self._call = call
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Future[None]] = set()

    def __enter__(self) -> None:
        self._watcher: asyncio.Future[None] | None = None
        if self._receive is not None:
            self._watcher = asyncio.ensure_future(self._gone(self._receive))
            self._watcher.add_done_callback(self._ended)
        first = PING_INTERVAL if self._first is None else self._first
        self._timer = self._loop.call_later(first, self._keepalive)

    def __exit__(self, *_exc: object) -> None:
        self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        for task in self._tasks:
            task.cancel()

    async def _gone(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    def _ended(self, watcher: asyncio.Future[None]) -> None:
        if watcher.cancelled():
            return  # the call ended first
        if watcher.exception() is not None:
            logger.debug("lost the request stream: %r", watcher.exception())
        self._call.cancel()

    def _pinged(self, ping: asyncio.Future[None]) -> None:
        self._tasks.discard(ping)
        if not ping.cancelled() and ping.exception() is not None:
            logger.debug("keepalive not sent: %r", ping.exception())

    def _keepalive(self) -> None:
        ping = asyncio.ensure_future(self._reply.ping())
        self._tasks.add(ping)
        ping.add_done_callback(self._pinged)
        self._timer = self._loop.call_later(PING_INTERVAL, self._keepalive)
