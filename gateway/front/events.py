"""Resumable MCP streams, kept in the gateway's state store.

A handshake-era client whose connection drops mid-call reconnects with `Last-Event-ID`
and is sent everything it missed (progress, logs, the result): the dropped connection is
not a cancellation, and the events wait in the state store (`STREAM:{mcp:<session>}:events`,
with the events TTL and length cap), in memory or in Redis.

The SDK hands one event store to every session and names streams by request id, which
repeats across sessions; so each session gets its own view (`SessionEvents`), whose event
ids (`<stored id>/<stream>`) carry the stream they belong to and which replays only its
own session's events. The resume itself (taking over the live tail, then replaying) is
`SessionTransport.replay_events` (session_transport.py).

A resume that cannot be complete says so: events trimmed or expired unread
(`StreamBatch.gap`), or events that could not be stored at all (the store was away: they
went out live, without an id), come first as a `gap_notice`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Final

import mcp_types as types
from mcp.server.streamable_http import (
    EventCallback,
    EventId,
    EventMessage,
    EventStore,
    StreamId,
)

from ..state import StateError, StateStore, Stream, StreamGap
from ..state.base import START, format_id, parse_id

logger = logging.getLogger("gateway.front")

REPLAY_BATCH = 500
MAX_ISSUED = 256
"""Streams of one session whose ids are remembered (the newest), so that an id this
session gave whose event the store no longer has is told from one it never gave."""
MAX_LOST_MARKS = 1024
"""Streams of one session remembered as having lost events; beyond, one mark for all."""
_MAX_PART = 2**64 - 1
"""Redis stream ids are two unsigned 64-bit numbers."""
_EVENT_ID: Final = re.compile(r"([0-9]{1,20})-([0-9]{1,20})/(.+)", re.DOTALL)

Position = tuple[int, int]


class BadEventId(ValueError):
    """A `Last-Event-ID` that is not an id this gateway gives (400)."""


class UnknownEventId(LookupError):
    """A well-formed `Last-Event-ID` that names no event of this session (400): made up,
    or another session's."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """A parsed event id: the stored event's id in the session's stream, and the MCP
    stream (request id) it belongs to."""

    position: Position
    stream: StreamId

    @property
    def stored(self) -> str:
        return format_id(self.position)

    def __str__(self) -> str:
        return f"{self.stored}/{self.stream}"


def parse_event_id(text: str) -> Cursor:
    match = _EVENT_ID.fullmatch(text)
    if match is None:
        raise BadEventId("Last-Event-ID is not an event id of this server")
    position = (int(match[1]), int(match[2]))
    if position == (0, 0) or max(position) > _MAX_PART:
        raise BadEventId("Last-Event-ID is not an event id of this server")
    return Cursor(position, match[3])


def position_of(event_id: str | None) -> Position | None:
    """The stored position of an event id this module gave; None for none (a message
    sent without an id, because it could not be stored)."""
    if not event_id:
        return None
    try:
        return parse_event_id(event_id).position
    except BadEventId:
        return None


def _before(position: Position) -> str:
    """The id just before `position`, so that a read after it starts *at* `position`."""
    ms, seq = position
    return format_id((ms, seq - 1) if seq else (ms - 1, _MAX_PART))


@dataclass(frozen=True, slots=True)
class Replay:
    messages: tuple[EventMessage, ...]
    """The stream's events after the cursor, oldest first."""
    last: Position
    """The newest position delivered by the replay (the cursor's when nothing was)."""
    answered: bool
    """The stream's answer is among `messages`, or it was given but could not be
    stored: nothing follows."""
    gap: dict[str, Any] | None
    """What is missing, when the replay cannot be complete (see `gap_notice`)."""


def gap_notice(cursor: Cursor, gap: dict[str, Any]) -> types.JSONRPCNotification:
    """What a resumed stream sends first when events after `cursor` are gone: a log
    message (`notifications/message`, level warning, logger `gateway`), which every MCP
    client accepts, whose data names the gap."""
    data = {"error": "stream_gap", "lastEventId": str(cursor), **gap}
    params = {"level": "warning", "logger": "gateway", "data": data}
    return types.JSONRPCNotification(jsonrpc="2.0", method="notifications/message", params=params)


class SessionEvents(EventStore):
    """One MCP session's streams, in the state store."""

    def __init__(self, store: StateStore, mcp_session_id: str) -> None:
        self._store = store
        self.key = f"mcp:{mcp_session_id}"
        self._newest: Position = (0, 0)
        """The newest position stored for this session."""
        self._issued: dict[StreamId, tuple[Position, Position]] = {}
        """The first and last positions given to each of the newest streams."""
        self._lost: dict[StreamId, Position] = {}
        """Streams with events that could not be stored: the newest position stored
        before the last such event (a cursor at or before it has not seen it)."""
        self._lost_any: Position | None = None
        self._unstored_answers: set[StreamId] = set()
        """Streams whose answer could not be stored: a resume of one ends after what
        the store has (nothing will follow)."""
        self.opening = True
        """The session's opening request (initialize) is being served: a priming event
        that cannot be stored then refuses the session (see `refused`)."""
        self.refused: StateError | None = None
        self.ended = False
        """The session ended and its events are deleted: nothing more is stored."""

    async def store_event(
        self, stream_id: StreamId, message: types.JSONRPCMessage | None
    ) -> EventId:
        """The SDK's contract. A message that cannot be stored still goes out, live and
        without an id (""), rather than stopping the SDK's message router, which would end
        every stream of the session; the loss is remembered for a resume to report."""
        if message is None and self.opening:
            try:
                return await self._append(stream_id, None)
            except StateError as exc:
                self.refused = exc
                raise
        wire = (
            None
            if message is None
            else message.model_dump(mode="json", by_alias=True, exclude_none=True)
        )
        return await self.store_wire(stream_id, wire) or ""

    async def store_wire(self, stream_id: StreamId, message: dict[str, Any] | None) -> str | None:
        """`store_event` of a message in its wire form (None: a priming event), for the
        gateway's own door to handshake-era calls (session_calls.py), which has no model
        of it. None when it could not be stored (so it has no id to resume from)."""
        if self.ended:
            return None
        try:
            return await self._append(stream_id, message)
        except StateError as exc:
            if message is not None:
                self._mark_lost(stream_id)
                answer = "method" not in message and str(message.get("id")) == stream_id
                if answer and len(self._unstored_answers) < MAX_LOST_MARKS:
                    self._unstored_answers.add(stream_id)
            logger.warning("MCP stream %s: event not stored, so not resumable: %s", stream_id, exc)
            return None

    async def _append(self, stream_id: StreamId, message: dict[str, Any] | None) -> str:
        if self.ended:
            raise StateError("the session has ended")
        stored = await self._store.append(
            self.key, Stream.EVENTS, {"stream": stream_id, "message": message}
        )
        cursor = parse_event_id(f"{stored}/{stream_id}")
        self._newest = max(self._newest, cursor.position)
        issued = self._issued.pop(stream_id, None)
        self._issued[stream_id] = (issued[0] if issued else cursor.position, cursor.position)
        if len(self._issued) > MAX_ISSUED:
            del self._issued[next(iter(self._issued))]
        return str(cursor)

    async def _forgotten(self, cursor: Cursor) -> bool:
        """Whether the store has nothing as old as `cursor` (it lost this session's stream,
        a Redis that restarted empty): else an id it does not have was never given."""
        oldest = await self._store.read(self.key, Stream.EVENTS, START, 1)
        return not oldest.events or cursor.position < parse_id(oldest.events[0].id)

    def _gave(self, cursor: Cursor) -> bool:
        issued = self._issued.get(cursor.stream)
        return issued is not None and issued[0] <= cursor.position <= issued[1]

    def _mark_lost(self, stream_id: StreamId) -> None:
        if stream_id in self._lost or len(self._lost) < MAX_LOST_MARKS:
            self._lost[stream_id] = self._newest
        else:
            self._lost_any = self._newest

    def _lost_after(self, cursor: Cursor) -> bool:
        marks = [self._lost.get(cursor.stream), self._lost_any]
        return any(mark is not None and cursor.position <= mark for mark in marks)

    async def replay(self, cursor: Cursor) -> Replay:
        """The events of `cursor`'s stream after it, and what is missing among them.
        Raises UnknownEventId for an id this session did not give, StateError when the
        store cannot be read."""
        batch = await self._store.read(
            self.key, Stream.EVENTS, _before(cursor.position), REPLAY_BATCH
        )
        found = batch.events[0] if batch.events else None
        known = (
            found is not None
            and found.id == cursor.stored
            and found.data.get("stream") == cursor.stream
        )
        gap: dict[str, Any] | None = None
        if not known:
            if batch.gap is not None:
                gap = _trimmed(batch.gap)
            elif self._gave(cursor) and await self._forgotten(cursor):
                gap = {"reason": "the state store lost the stream's events"}
            else:  # not in this session's stream, and nothing is gone that it could be
                raise UnknownEventId("Last-Event-ID names no event of this session")
        if self._lost_after(cursor):
            gap = {"reason": "events were not stored while the state store was away", **(gap or {})}
        events = batch.events[1:] if known else batch.events
        messages: list[EventMessage] = []
        last, answered = cursor.position, False
        while True:
            for event in events:
                data = event.data
                if data.get("stream") != cursor.stream or data.get("message") is None:
                    continue
                message = types.jsonrpc_message_adapter.validate_python(data["message"])
                event_id = f"{event.id}/{cursor.stream}"
                messages.append(EventMessage(message, event_id))
                last = max(last, parse_event_id(event_id).position)
                answered = answered or is_answer(message, cursor.stream)
            if len(batch.events) < REPLAY_BATCH or batch.last_id is None:
                answered = answered or cursor.stream in self._unstored_answers
                return Replay(tuple(messages), last, answered, gap)
            batch = await self._store.read(self.key, Stream.EVENTS, batch.last_id, REPLAY_BATCH)
            events = batch.events

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        """The SDK's contract, kept for completeness: the gateway's transport resumes
        through `replay` (session_transport.py), which also takes over the live tail."""
        try:
            cursor = parse_event_id(last_event_id)
            replay = await self.replay(cursor)
        except (BadEventId, UnknownEventId, StateError) as exc:
            logger.warning("MCP stream cannot resume from %r: %s", last_event_id[:80], exc)
            return None
        if replay.gap is not None:
            await send_callback(EventMessage(gap_notice(cursor, replay.gap)))
        for message in replay.messages:
            await send_callback(message)
        return cursor.stream

    async def end(self) -> None:
        """The session ended: stop storing and delete its events (else they would wait
        for the events TTL)."""
        self.ended = True
        try:
            await self._store.delete_session(self.key)
        except StateError as exc:
            logger.warning("MCP session %s: events not deleted, they expire: %s", self.key, exc)


def is_answer(message: types.JSONRPCMessage, stream: StreamId) -> bool:
    return isinstance(message, types.JSONRPCResponse | types.JSONRPCError) and (
        str(message.id) == stream
    )


def _trimmed(gap: StreamGap | None) -> dict[str, Any]:
    if gap is None:
        return {}
    if gap.lost_through is None:
        return {"reason": "the stream expired"}
    return {"reason": "events were trimmed", "lostThrough": gap.lost_through}
