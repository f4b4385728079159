"""`tools/call` and `tools/list` of a handshake-era caller on an open HTTP session, served
without the SDK's server stack.

Most MCP clients today speak the handshake era (2025-11-25 and before): they open a
session with `initialize` and send every request with its `Mcp-Session-Id`. The SDK
serves such a request through its session transport (an SSE response object with tasks
of its own, memory streams, a message router) and its dispatcher (a task per message,
middleware, a dispatch context), and that machinery cost a proxied call more than twice
the gateway's own work. This module answers the two requests that make up nearly all of a
client's traffic in the request's own task, and hands everything else to the SDK:
initialize, notifications, GET streams, DELETE, every other method, and any request whose
session, headers or caller it does not find exactly as expected (the SDK then answers,
refusals included, as it always has).

What a caller receives says what the SDK's door says, in either form the era allows. A
call answered before it sends anything else, within PRIME_AFTER seconds, is one JSON
response (the SDK answers with SSE, which its own client closes after the answer: a new
connection per call for both ends). Otherwise it is what the SDK sends: SSE with the
session id, a priming event (2025-11-25 and later), the call's progress and logs, then
the answer, each stored first in the session's event store under the SDK's stream naming
(the request id), so a client that loses the connection resumes with `Last-Event-ID`
through the SDK's replay; a dropped connection is not a cancellation. While a call runs,
the session's idle countdown is suspended, as the SDK's transport does for its own
requests. `notifications/cancelled` for a call served here cancels it (answered, as the SDK
answers on this era's wire, with "Request cancelled"), and ending the session (DELETE)
ends it. A caller that declared sampling or elicitation may be asked an upstream's
questions during a call: they go through the session's JSON-RPC dispatcher, related to
the call (askers.DispatcherAsker), and the transport's router, which stores them and
hands them to the call's slot in its request streams, held while the call runs and the
caller's connection lasts (`CallStream.routed`, session_stream.py); the caller's answer,
a POST to the session, goes through the SDK back to the dispatcher. A session whose
outbound channel is not such a dispatcher keeps the SDK's door for these callers.

The call itself is `Front.run_call`, the one check, catalog and audit of every door;
tests/front/test_session_calls.py sends the same requests through both doors and
compares. What this door reads and writes of the SDK's sessions and transports has no
public API; it goes through gateway/sdk_internals.py, and where the installed SDK lacks
a name only this door needs, the door stays closed (one warning) and the SDK serves.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any, Final, cast

import anyio
import mcp_types as types
from mcp.server.auth.middleware.bearer_auth import AuthorizationContext
from mcp.server.connection import Connection
from mcp.server.streamable_http import (
    MCP_SESSION_ID_HEADER,
    REQUEST_CANCELLED,
    StreamableHTTPServerTransport,
    check_accept_headers,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp.shared.jsonrpc_dispatcher import (
    JSONRPCDispatcher,
    handler_exception_to_error_data,
    progress_token_from_params,
)
from mcp_types import methods as _methods
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, is_version_at_least
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from .. import sdk_internals as sdk
from ..calls import CallChannel
from ..principal import Principal
from ..upstreams.relay import Asker
from .askers import CannotBeAsked, DispatcherAsker, can_be_asked
from .events import SessionEvents
from .modern_calls import (
    CallWatch,
    Listings,
    is_tools_request,
    relays,
)
from .server import Front
from .session_stream import CallStream

logger = logging.getLogger("gateway.front")

_HANDSHAKE: Final = frozenset(HANDSHAKE_PROTOCOL_VERSIONS)
_CANCELLED: Final = {"code": REQUEST_CANCELLED, "message": "Request cancelled"}
PRIME_AFTER: Final = 0.5
"""Seconds a call may stay silent and still be answered as one JSON response; after that
its response turns to SSE with a priming event, whose id lets the client resume it."""


def is_session_tools_request(message: Any, headers: dict[str, str]) -> bool:
    """Whether a POST body (parsed) may be a handshake-era tools/call or tools/list on an
    open session, which `SessionCalls.serve` then checks further. `headers`: the
    request's, by lowercase name."""
    if MCP_SESSION_ID_HEADER not in headers or not is_tools_request(message):
        return False
    version = headers.get(MCP_PROTOCOL_VERSION_HEADER)
    if version is not None and version not in _HANDSHAKE:
        return False
    params = message.get("params")
    return params is None or isinstance(params, dict)


class SessionCalls:
    def __init__(
        self,
        front: Front,
        manager: StreamableHTTPSessionManager,
        security: TransportSecuritySettings | None,
        listings: Listings,
    ) -> None:
        self._front = front
        self._manager = manager
        self._security = TransportSecurityMiddleware(security)
        self._listings = listings
        self._running: dict[str, dict[str, _Running]] = {}
        """Calls served here, by session id and request id (as the SDK keys streams)."""
        mismatch = sdk.door_problem()
        self._open = mismatch is None
        if mismatch is not None:
            logger.warning("handshake-era calls are left to the SDK: %s", mismatch)

    async def serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        message: dict[str, Any],
        headers: dict[str, str],
        requestor: AuthorizationContext,
        principal: Principal,
    ) -> bool:
        """Answer `message` (a request `is_session_tools_request` with the same
        `headers`) for the authenticated `requestor` (`principal` as the session knows
        it), or return False without having sent anything: the SDK is to serve it."""
        if not self._open:
            return False
        session_id = headers[MCP_SESSION_ID_HEADER]
        found = self._session(session_id, requestor)
        if found is None:
            return False
        transport, connection, events = found
        dispatcher: JSONRPCDispatcher[Any] | None = None
        if message["method"] == "tools/call" and can_be_asked(connection):
            if not isinstance(connection.outbound, JSONRPCDispatcher):
                return False  # no way here to put a question to it: the SDK's door
            dispatcher = connection.outbound
        request = Request(scope)
        if await self._security.validate_request(request, is_post=True) is not None:
            return False
        if not all(check_accept_headers(request)) or not sdk.content_type_ok(transport, request):
            return False
        key = str(message["id"])
        if key in self._running.get(session_id, {}) or key in sdk.request_streams(transport):
            return False  # an id already in flight: the SDK's to sort out
        running = self._running.setdefault(session_id, {})
        version = headers.get(MCP_PROTOCOL_VERSION_HEADER, types.DEFAULT_NEGOTIATED_VERSION)
        stream = CallStream(send, transport, events, key, message["id"])
        stream.open(session_id, prime=is_version_at_least(version, "2025-11-25"))
        call = running[key] = _Running()
        asker: Asker = CannotBeAsked()
        routing: AbstractAsyncContextManager[None] = nullcontext()
        if dispatcher is not None:
            asker = DispatcherAsker(dispatcher, connection, message["id"])
            routing = stream.routed(receive)
        async with routing:
            try:
                watch = CallWatch(stream, None, call.scope, first=PRIME_AFTER)
                with sdk.held_open(transport), call.scope, watch:
                    await self._answer(stream, message, connection, asker, principal)
            finally:
                del running[key]
                if not running:
                    self._running.pop(session_id, None)
            if call.why == "cancelled":  # by the caller: answered as the SDK answers it
                error = {"jsonrpc": "2.0", "id": message["id"], "error": _CANCELLED}
                await stream.finish(error)
        await stream.close()  # the session ended, or the answer was cut off: unanswered
        return True

    def _session(
        self, session_id: str, requestor: AuthorizationContext
    ) -> tuple[StreamableHTTPServerTransport, Connection, SessionEvents | None] | None:
        """The open session `session_id` of `requestor`, if this module can serve on it."""
        manager = self._manager
        transport = sdk.session_transport(manager, session_id)
        if transport is None or sdk.session_owner(manager, session_id) != requestor:
            return None
        if transport.is_terminated or transport.is_json_response_enabled:
            return None
        if transport.idle_scope is not None and transport.idle_scope.cancel_called:
            return None
        events = sdk.event_store(transport)
        if events is not None and not isinstance(events, SessionEvents):
            return None
        if sdk.retry_interval(transport) is not None:
            return None  # the priming event would carry it: left to the SDK
        connection = self._front.sessions.get(session_id)
        if connection is None or not connection.initialize_accepted:
            return None
        return transport, connection, events

    async def _answer(
        self,
        stream: CallStream,
        message: dict[str, Any],
        connection: Connection,
        asker: Asker,
        principal: Principal,
    ) -> None:
        raw = cast(dict[str, Any] | None, message.get("params"))
        method: str = message["method"]
        request_id = message["id"]
        version = connection.protocol_version
        try:
            _methods.validate_client_request(method, version, raw)
            if method == "tools/list":
                types.PaginatedRequestParams.model_validate(raw or {}, by_name=False)
                await stream.finish_result(self._listing(version, principal))
                return
            params = types.CallToolRequestParams.model_validate(raw or {}, by_name=False)
            token = progress_token_from_params(raw)

            progress, log = relays(stream, token)
            channel = CallChannel(
                progress=progress,
                log=log,
                log_level=self._front.log_level(connection),
                asker=asker,
                owner=connection,
            )
            result = await self._front.run_call(principal, params, channel)
            dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
            answer = _methods.serialize_server_result(method, version, dumped)
        except Exception as exc:  # as the SDK's dispatcher answers a handler's exception
            error = handler_exception_to_error_data(exc)
            if error is None:
                logger.exception("handler for %r raised", method)
                error = types.ErrorData(code=0, message=str(exc))
            dumped = error.model_dump(by_alias=True, mode="json", exclude_none=True)
            await stream.finish({"jsonrpc": "2.0", "id": request_id, "error": dumped})
            return
        await stream.finish({"jsonrpc": "2.0", "id": request_id, "result": answer})

    def _listing(self, version: str, principal: Principal) -> bytes:
        def shape(listing: types.ListToolsResult) -> dict[str, Any]:
            dumped = listing.model_dump(by_alias=True, mode="json", exclude_none=True)
            return _methods.serialize_server_result("tools/list", version, dumped)

        return self._listings.tools(self._front.views.view(principal), version, shape)

    def cancellation(self, message: Any, headers: dict[str, str]) -> tuple[str, str] | None:
        """If `message` (a POST body, parsed, on its way to the SDK) is a
        `notifications/cancelled` for a call served here, that call's session id and
        request key (see `cancel`)."""
        session_id = headers.get(MCP_SESSION_ID_HEADER)
        if session_id not in self._running or not isinstance(message, dict):
            return None
        if message.get("method") != "notifications/cancelled" or "id" in message:
            return None
        params = message.get("params")
        request_id = params.get("requestId") if isinstance(params, dict) else None
        if isinstance(request_id, bool) or not isinstance(request_id, str | int):
            return None
        key = str(request_id)
        return (session_id, key) if key in self._running[session_id] else None

    def cancel(self, session_id: str, key: str, requestor: AuthorizationContext) -> None:
        """Cancel a call served here: its caller's `notifications/cancelled` was accepted
        by the SDK (so it passed the same checks as any request on the session)."""
        if sdk.session_owner(self._manager, session_id) != requestor:
            return
        call = self._running.get(session_id, {}).get(key)
        if call is not None:
            call.end("cancelled")

    def check_ended(self, headers: dict[str, str]) -> None:
        """After the SDK served a request: if it ended the request's session (DELETE),
        the calls served here on it end unanswered, as the SDK's own do."""
        session_id = headers.get(MCP_SESSION_ID_HEADER)
        if session_id is None or session_id not in self._running:
            return
        transport = sdk.session_transport(self._manager, session_id)
        if transport is None or transport.is_terminated:
            for call in self._running[session_id].values():
                call.end("ended")


class _Running:
    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.why: str | None = None

    def end(self, why: str) -> None:
        if self.why is None:
            self.why = why
            self.scope.cancel()
