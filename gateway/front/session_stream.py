"""The response of one handshake-era call served by session_calls.py: JSON when the answer
comes first, else SSE with a priming event, every message stored for `Last-Event-ID`
replay; for a caller that may be asked questions, every message through the SDK
transport's router (see `CallStream.routed`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, Final

import anyio
import mcp_types as types
from anyio.streams.memory import MemoryObjectReceiveStream
from mcp.server.streamable_http import (
    MCP_SESSION_ID_HEADER,
    REQUEST_STREAM_BUFFER_SIZE,
    EventMessage,
    StreamableHTTPServerTransport,
)
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from starlette.types import Receive, Send

from .. import jsoncodec, sdk_internals
from .events import SessionEvents
from .modern_calls import JSON_TYPE, SSE_HEADERS, HeadOnce

logger = logging.getLogger("gateway.front")

_SESSION_HEADER: Final = MCP_SESSION_ID_HEADER.encode()


class CallStream:
    """One call's response. An answer that comes before anything else, within
    PRIME_AFTER seconds, is one JSON response (the era allows either form, and the SDK
    client keeps the connection only after a JSON one: it closes an SSE response as
    soon as it has the answer, which costs both ends a new connection per call). Else
    it is SSE from then on: a priming event first (2025-11-25 and later), every message
    stored in the session's event store first (it carries the stored id) and then sent,
    and sent also to a stream the client resumed with `Last-Event-ID` meanwhile (the
    SDK's replay waits on the transport's request streams for it). Once the answer's write has begun
    it is not cut off by a cancellation, as the SDK's dispatcher does not cut it off.
    For a call whose caller may be asked questions, every message goes through the SDK
    transport's router instead (see routed)."""

    def __init__(
        self,
        send: Send,
        transport: StreamableHTTPServerTransport,
        events: SessionEvents | None,
        key: str,
        request_id: types.RequestId,
    ) -> None:
        self._send = send
        self._transport = transport
        self._events = events
        self._key = key
        self._id = request_id
        self._ended = False
        """The answer is given (or being given): nothing more is sent."""
        self._closed = False
        self._head = HeadOnce()
        self._session = b""
        self._prime = False
        self._held = b""
        """The priming event, until it goes out with the next frame."""
        self._priming: str | None = None
        """The priming event's id, when it was stored before the head (see routed)."""
        self._via_router = False
        """The call's messages go through the transport's router (see routed)."""
        self._routed_answer = False
        """The answer was handed to the router (see routed)."""

    def open(self, session_id: str, *, prime: bool) -> None:
        self._session = session_id.encode("latin-1")
        self._prime = prime

    async def _store(self, message: dict[str, Any] | None) -> str | None:
        """The stored event's id; None without an event store, or when it fails: the
        call's answer matters more than its resumability (the message is sent without
        an id, and a resume from before it says that something is missing)."""
        if self._events is None:
            return None
        return await self._events.store_wire(self._key, message)

    async def _sse_head(self) -> None:
        """The priming event stored (once, before anything else of this stream), then the
        head sent; the priming event goes out with the next frame."""
        if self._prime:
            self._prime = False
            priming = self._priming or await self._store(None)
            if priming is not None:
                self._held = b"id: " + priming.encode() + b"\r\ndata: \r\n\r\n"
        head = [*SSE_HEADERS, (_SESSION_HEADER, self._session)]
        await self._send({"type": "http.response.start", "status": 200, "headers": head})

    async def event(self, method: str, params: dict[str, Any]) -> None:
        await self._message({"jsonrpc": "2.0", "method": method, "params": params}, None, True)

    async def finish(self, message: dict[str, Any]) -> None:
        await self._message(message, None, False)

    async def finish_result(self, result: bytes) -> None:
        """The answer, its result already JSON."""
        head = b'{"jsonrpc":"2.0","id":' + jsoncodec.dumps(self._id) + b',"result":'
        await self._message(None, head + result + b"}", False)

    async def _message(self, message: Any, data: bytes | None, more: bool) -> None:
        if self._ended:
            return
        if self._via_router:
            if message is None and data is not None:
                message = jsoncodec.loads(data)
            if more:
                await self._route(message)
                return
            self._ended = True
            with anyio.CancelScope(shield=True):
                self._routed_answer = await self._route(message)
            return
        if more:
            await self._write(message, data, more)
            return
        self._ended = True
        with anyio.CancelScope(shield=True):
            await self._write(message, data, more)

    async def _write(self, message: Any, data: bytes | None, more: bool) -> None:
        if not more and not self._head.started:
            await self._json(data if data is not None else jsoncodec.dumps(message))
            return
        await self._head.ensure(self._sse_head)
        if message is None and data is not None and self._events is not None:
            message = jsoncodec.loads(data)  # to be stored
        event_id = await self._store(message)
        if data is None:
            data = jsoncodec.dumps(message)
        frame = b"event: message\r\ndata: " + data + b"\r\n\r\n"
        if event_id is not None:
            frame = b"id: " + event_id.encode() + b"\r\n" + frame
        frame, self._held = self._held + frame, b""
        await self._send({"type": "http.response.body", "body": frame, "more_body": more})
        self._closed = not more
        resumed = sdk_internals.request_streams(self._transport).get(self._key)
        if resumed is not None and message is not None:
            parsed = types.jsonrpc_message_adapter.validate_python(message)
            with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await resumed[0].send(EventMessage(parsed, event_id))

    @asynccontextmanager
    async def routed(self, receive: Receive) -> AsyncIterator[None]:
        """For a call whose caller may be asked questions (through the session's SDK
        dispatcher, see askers.DispatcherAsker): every message of the call goes through
        the SDK transport's router, which stores it and hands it to the call's slot in its
        request streams, as for the SDK's own calls. One writer stores them all, so replay
        order is send order; what lands in the slot is sent on this response. The slot is
        held while the call runs and its connection lasts: given back when the caller's
        connection drops, so that a stream it resumes with `Last-Event-ID` takes it over.
        The context ends once the answer is sent (or cannot be), and relays until then,
        so what the call's end brings (the withdrawal of a question left unanswered) is
        sent too. The priming event is stored first."""
        if self._prime:
            self._priming = await self._store(None)
        streams = sdk_internals.request_streams(self._transport)
        slot = anyio.create_memory_object_stream[EventMessage](REQUEST_STREAM_BUFFER_SIZE)
        streams[self._key] = slot
        self._via_router = True

        def give_back() -> None:
            if streams.get(self._key) is slot:
                del streams[self._key]
            slot[0].close()
            slot[1].close()

        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_until_gone, receive, give_back)
                relayed = anyio.Event()
                tasks.start_soon(self._relay, slot[1], relayed)
                try:
                    yield
                    if self._routed_answer:
                        await relayed.wait()  # the answer sent, or the slot gone
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            give_back()

    async def _route(self, message: dict[str, Any]) -> bool:
        """`message` handed to the transport's router, as the SDK's own calls hand theirs;
        False when the session is gone."""
        writer = sdk_internals.write_stream(self._transport)
        if writer is None:
            return False
        parsed = types.jsonrpc_message_adapter.validate_python(message)
        related = ServerMessageMetadata(related_request_id=self._id)
        try:
            await writer.send(SessionMessage(parsed, metadata=related))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
        return True

    async def _relay(
        self, routed: MemoryObjectReceiveStream[EventMessage], relayed: anyio.Event
    ) -> None:
        try:
            async for routed_event in routed:
                if await self._routed(routed_event):
                    return
        except anyio.ClosedResourceError:
            pass
        except Exception:  # a response that cannot be written: the call goes on
            logger.debug("MCP stream %s: relay stopped", self._key, exc_info=True)
        finally:
            relayed.set()

    async def _routed(self, routed: EventMessage) -> bool:
        """A message the transport's router stored and handed to this call, sent as the
        SDK's transport frames it; True once it was the answer (the response ends)."""
        if self._closed:
            return True
        message = routed.message
        final = isinstance(message, types.JSONRPCResponse | types.JSONRPCError) and (
            str(message.id) == self._key
        )
        data = message.model_dump_json(by_alias=True, exclude_unset=True).encode()
        if final and not self._head.started:
            await self._json(data)  # nothing before it: one JSON response, as otherwise
            return True
        await self._head.ensure(self._sse_head)
        frame = b"event: message\r\ndata: " + data + b"\r\n\r\n"
        if routed.event_id is not None:
            frame = b"id: " + routed.event_id.encode() + b"\r\n" + frame
        frame, self._held = self._held + frame, b""
        await self._send({"type": "http.response.body", "body": frame, "more_body": not final})
        self._closed = final
        return final

    async def _json(self, data: bytes) -> None:
        self._head.sent = True
        head = [
            JSON_TYPE,
            (b"content-length", str(len(data)).encode()),
            (_SESSION_HEADER, self._session),
        ]
        await self._send({"type": "http.response.start", "status": 200, "headers": head})
        await self._send({"type": "http.response.body", "body": data, "more_body": False})
        self._closed = True

    async def close(self) -> None:
        """End the response, answered or not (a call ended with its session, or cut off
        before its answer)."""
        self._ended = True
        if not self._closed:
            self._closed = True
            self._prime = False  # nothing to resume: no event for it in the store
            await self._head.ensure(self._sse_head)
            frame, self._held = self._held, b""
            await self._send({"type": "http.response.body", "body": frame, "more_body": False})

    async def ping(self) -> None:
        """After PRIME_AFTER seconds of silence, SSE with its priming event (which lets
        the client resume the call); after that, a keepalive comment now and then."""
        if self._ended:
            return
        await self._head.ensure(self._sse_head)
        frame, self._held = self._held, b""
        if not frame:
            frame = b": ping\r\n\r\n"
        if not self._ended:
            await self._send({"type": "http.response.body", "body": frame, "more_body": True})


async def _until_gone(receive: Receive, then: Callable[[], None]) -> None:
    """`then()` once the client's connection is gone (for this era, not a cancellation)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    then()
