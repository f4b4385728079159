"""The SDK's session manager and session transport, with the gateway's resumable streams
(events.py) and the state store's failures answered as such.

- A resume (`GET` with `Last-Event-ID`) first takes over the stream's live tail and only
  then reads the store, so that an event stored meanwhile is either read or handed over
  live (the SDK reads first and registers after, and loses what is stored in between);
  what is both is sent once, by its id. It ends with the stream's answer. A malformed id
  is a 400, an id this session did not give a 400, a store that cannot be read a 503.
- A session's opening request while the store is away is a 503 with `Retry-After` and no
  session, rather than the SDK's 500 for a session ended at once.
- A session that ends (DELETE, idle timeout) takes its events with it.

The SDK (2.3) has no public hooks for these: its private ones, and the transport's and
manager's private state, are reached through gateway/sdk_internals.py, which checks them
at start-up.
"""

from __future__ import annotations

import logging
import math
from http import HTTPStatus
from typing import Any
from uuid import uuid4

import anyio
import mcp_types as types
from mcp.server.auth.middleware.bearer_auth import AuthorizationContext
from mcp.server.streamable_http import (
    CONTENT_TYPE_SSE,
    MCP_SESSION_ID_HEADER,
    REQUEST_STREAM_BUFFER_SIZE,
    EventMessage,
    SSEEvent,
    StreamableHTTPServerTransport,
)
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from .. import sdk_internals as sdk
from ..sdk_internals import HookedSessionManager, HookedTransport
from ..state import StateError, StateStore, StateUnavailable
from .events import (
    BadEventId,
    Cursor,
    Replay,
    SessionEvents,
    UnknownEventId,
    gap_notice,
    is_answer,
    parse_event_id,
    position_of,
)

logger = logging.getLogger("gateway.front")

GAP_IDLE_SECONDS = 30.0
"""How long a resume that could not be complete waits for a next event before it ends."""

Slot = sdk.Slot


def unavailable(retry_after: float, what: str) -> JSONResponse:
    """503 with `Retry-After`, as a JSON-RPC error without an id (and no session id)."""
    error = {"code": types.INTERNAL_ERROR, "message": f"{what}: state store unavailable"}
    return JSONResponse(
        {"jsonrpc": "2.0", "id": None, "error": error},
        status_code=HTTPStatus.SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
    )


class SessionTransport(HookedTransport):
    """A session's transport whose resumes miss nothing and repeat nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resumes: dict[str, Slot] = {}
        """The live tails taken over by resumes, by stream."""

    async def replay_events(self, last_event_id: str, request: Request, send: Send) -> None:
        events = sdk.event_store(self)
        if not isinstance(events, SessionEvents):
            await super().replay_events(last_event_id, request, send)
            return
        scope, receive = request.scope, request.receive
        try:
            cursor = parse_event_id(last_event_id)
        except BadEventId as exc:
            await self._refuse(str(exc), scope, receive, send)
            return
        stream = cursor.stream
        # The live tail first: whatever is stored from now on reaches this slot too.
        slot = anyio.create_memory_object_stream[EventMessage](REQUEST_STREAM_BUFFER_SIZE)
        sdk.request_streams(self)[stream] = self._resumes[stream] = slot
        try:
            try:
                replay = await events.replay(cursor)
            except UnknownEventId as exc:
                await self._refuse(str(exc), scope, receive, send)
                return
            except StateError as exc:
                logger.warning("MCP stream %s cannot resume: %s", stream, exc)
                retry = exc.retry_after if isinstance(exc, StateUnavailable) else 1.0
                await unavailable(retry, "cannot resume")(scope, receive, send)
                return
            await self._resume(cursor, replay, slot, scope, receive, send)
        finally:
            self._release(stream, slot)

    async def _resume(
        self, cursor: Cursor, replay: Replay, slot: Slot, scope: Scope, receive: Receive, send: Send
    ) -> None:
        headers = {
            "Cache-Control": "no-cache, no-transform",
            "Connection": "keep-alive",
            "Content-Type": CONTENT_TYPE_SSE,
        }
        if self.mcp_session_id:
            headers[MCP_SESSION_ID_HEADER] = self.mcp_session_id
        writer, reader = anyio.create_memory_object_stream[SSEEvent](0)
        writers = sdk.sse_stream_writers(self)
        writers[cursor.stream] = writer  # so close_sse_stream() reaches it

        async def sender() -> None:
            try:
                async with writer:
                    if replay.gap is not None:
                        await writer.send(self._event(EventMessage(gap_notice(cursor, replay.gap))))
                    for message in replay.messages:
                        await writer.send(self._event(message))
                    if replay.answered:
                        return
                    # After a gap the answer itself may be what was lost: a call that has
                    # ended sends nothing more, so a stream silent that long ends (the
                    # client may resume again) instead of waiting for ever.
                    idle = GAP_IDLE_SECONDS if replay.gap is not None else math.inf
                    while True:
                        live: EventMessage | None = None
                        with anyio.move_on_after(idle):
                            try:
                                live = await slot[1].receive()
                            except anyio.EndOfStream:
                                return
                        if live is None:
                            return
                        position = position_of(live.event_id)
                        if position is not None and position <= replay.last:
                            continue  # stored before the replay's read: sent by it
                        await writer.send(self._event(live))
                        if is_answer(live.message, cursor.stream):
                            return
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass  # close_sse_stream(), or the session ended

        response = EventSourceResponse(content=reader, data_sender_callable=sender, headers=headers)
        try:
            await response(scope, receive, send)
        finally:
            if writers.get(cursor.stream) is writer:
                del writers[cursor.stream]
            await writer.aclose()
            await reader.aclose()

    def _event(self, message: EventMessage) -> SSEEvent:
        return sdk.event_data(self, message)

    async def _refuse(self, reason: str, scope: Scope, receive: Receive, send: Send) -> None:
        await sdk.error_response(self, reason, HTTPStatus.BAD_REQUEST)(scope, receive, send)

    def _release(self, stream: str, slot: Slot) -> None:
        streams = sdk.request_streams(self)
        if streams.get(stream) is slot:
            del streams[stream]
        if self._resumes.get(stream) is slot:
            del self._resumes[stream]
        slot[0].close()
        slot[1].close()

    async def clean_up_request_streams(self, request_id: Any) -> None:
        # The SDK cleans up by key: a request's writer that ends after a resume took its
        # stream over would close the resume's slot. The resume releases its own.
        key = str(request_id)
        taken = self._resumes.get(key)
        streams = sdk.request_streams(self)
        if taken is not None and streams.get(key) is taken and not self.is_terminated:
            return
        await super().clean_up_request_streams(request_id)

    async def terminate(self) -> None:
        await super().terminate()
        for slot in list(self._resumes.values()):
            slot[0].close()

    async def priming_event(self, stream_id: Any, protocol_version: str) -> SSEEvent | None:
        event = await super().priming_event(stream_id, protocol_version)
        # Not stored (the store is away): no id to resume from, so no priming event.
        return event if event is None or event["id"] else None


class GatewaySessionManager(HookedSessionManager):
    """The SDK's session manager, giving each session its own view of the event store."""

    def __init__(self, store: StateStore, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self._events_store = store

    def admit_session(
        self, requestor: AuthorizationContext | None
    ) -> StreamableHTTPServerTransport | None:
        # As the SDK's, with the gateway's transport and the session's own event store.
        if self.max_sessions is not None and sdk.session_count(self) >= self.max_sessions:
            return None
        transport = SessionTransport(
            mcp_session_id=(session_id := _new_session_id()),
            is_json_response_enabled=self.json_response,
            event_store=SessionEvents(self._events_store, session_id),
            security_settings=self.security_settings,
            retry_interval=self.retry_interval,
            idle_timeout=self.session_idle_timeout,
        )
        sdk.register_session(self, transport, requestor)
        return transport

    async def serve_opening_request(
        self,
        http_transport: StreamableHTTPServerTransport,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        events = sdk.event_store(http_transport)
        if not isinstance(events, SessionEvents):
            await super().serve_opening_request(http_transport, scope, receive, send)
            return
        status = await self._events_store.probe()
        if not status.ready:
            # Its streams could not be resumable: no session now, and when to come back.
            await self.discard_session(str(http_transport.mcp_session_id), http_transport)
            await unavailable(1.0, "cannot open a session")(scope, receive, send)
            return
        refused = False

        async def answer(message: Message) -> None:
            """The SDK's 500 for a priming event it could not store, as a 503."""
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] >= 500:
                failure = events.refused
                if failure is not None:
                    refused = True
                    retry = failure.retry_after if isinstance(failure, StateUnavailable) else 1
                    await unavailable(retry, "cannot open a session")(scope, receive, send)
                    return
            if not refused:
                await send(message)

        try:
            await super().serve_opening_request(http_transport, scope, receive, answer)
        finally:
            events.opening = False

    async def discard_session(
        self, session_id: str, transport: StreamableHTTPServerTransport
    ) -> None:
        await super().discard_session(session_id, transport)
        events = sdk.event_store(transport)
        if isinstance(events, SessionEvents) and not events.ended:
            with anyio.CancelScope(shield=True):
                await events.end()


def _new_session_id() -> str:
    return uuid4().hex
