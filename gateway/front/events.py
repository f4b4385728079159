"""Resumable MCP streams, kept in the gateway's state store.

A handshake-era client whose connection drops mid-call reconnects with `Last-Event-ID`
and is sent everything it missed (progress, logs, the result): the dropped connection is
not a cancellation, and the events wait in the state store (`STREAM:{mcp:<session>}:events`,
with the events TTL and length cap), in memory or in Redis.

The SDK hands one event store to every session and names streams by request id, which
repeats across sessions; so each session gets its own view (`SessionEvents`), whose event
ids carry the stream they belong to and which replays only its own session's events.
"""

from __future__ import annotations

import logging
from typing import Any

import mcp_types as types
from mcp.server.auth.middleware.bearer_auth import AuthorizationContext
from mcp.server.streamable_http import (
    EventCallback,
    EventId,
    EventMessage,
    EventStore,
    StreamableHTTPServerTransport,
    StreamId,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from ..state import StateError, StateStore, Stream

logger = logging.getLogger("gateway.front")

REPLAY_BATCH = 500


class SessionEvents(EventStore):
    """One MCP session's streams, in the state store."""

    def __init__(self, store: StateStore, mcp_session_id: str) -> None:
        self._store = store
        self._key = f"mcp:{mcp_session_id}"

    async def store_event(
        self, stream_id: StreamId, message: types.JSONRPCMessage | None
    ) -> EventId:
        return await self.store_wire(
            stream_id,
            None
            if message is None
            else message.model_dump(mode="json", by_alias=True, exclude_none=True),
        )

    async def store_wire(self, stream_id: StreamId, message: dict[str, Any] | None) -> EventId:
        """`store_event` of a message in its wire form (None: a priming event), for the
        gateway's own door to handshake-era calls (session_calls.py), which has no model
        of it."""
        event = {"stream": stream_id, "message": message}
        stored = await self._store.append(self._key, Stream.EVENTS, event)
        return f"{stored}/{stream_id}"

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        stored, _, stream_id = last_event_id.partition("/")
        if not stored or not stream_id:
            return None
        after = stored
        try:
            while True:
                batch = await self._store.read(self._key, Stream.EVENTS, after, REPLAY_BATCH)
                if batch.gap is not None:
                    # Events the client has not seen are gone: resuming would hide that.
                    logger.warning("MCP stream %s cannot resume: events were trimmed", stream_id)
                    return None
                for event in batch.events:
                    data = event.data
                    if data.get("stream") != stream_id or data.get("message") is None:
                        continue
                    message = types.jsonrpc_message_adapter.validate_python(data["message"])
                    await send_callback(EventMessage(message, f"{event.id}/{stream_id}"))
                if len(batch.events) < REPLAY_BATCH or batch.last_id is None:
                    return stream_id
                after = batch.last_id
        except (StateError, ValueError) as exc:
            logger.warning("MCP stream %s cannot resume: %s", stream_id, exc)
            return None


class GatewaySessionManager(StreamableHTTPSessionManager):
    """The SDK's session manager, giving each session its own view of the event store."""

    def __init__(self, store: StateStore, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self._events_store = store

    def _admit_session(
        self, requestor: AuthorizationContext | None
    ) -> StreamableHTTPServerTransport | None:
        transport = super()._admit_session(requestor)
        if transport is not None and transport.mcp_session_id is not None:
            # Pinned by `mcp<2.4`: the transport keeps its event store here.
            transport._event_store = SessionEvents(self._events_store, transport.mcp_session_id)
        return transport
