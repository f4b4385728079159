"""The embedded backend: the state store's contract in one process, with no server.

Values are kept encoded, exactly as Redis keeps them, so that a value read back is a copy
and a value that Redis could not store is refused here too. Expiry is lazy (a read of an
expired key finds nothing) plus a sweep of every expired key at most once per
`sweep_interval` seconds, run by writes, so memory stays bounded by what is live.
"""

from __future__ import annotations

import bisect
import fnmatch
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from . import codec
from .base import (
    MAX_CANDIDATES,
    START,
    JsonObject,
    StateStore,
    StoreStatus,
    Stream,
    StreamBatch,
    StreamEvent,
    StreamGap,
    TTLs,
    assembled,
    candidates_key,
    channel_name,
    flow_fields,
    flow_key,
    flow_runs_key,
    format_id,
    parse_id,
    session_claim_key,
    session_flows_key,
    session_id_of,
    session_key,
    sessions_index_key,
    stream_key,
)
from .memory_runs import MemoryRuns

logger = logging.getLogger("gateway.state")

StreamId = tuple[int, int]
SUBSCRIBER_BUFFER = 1000
"""Payloads a slow subscriber may fall behind by before new ones are dropped for it
(pub/sub is at most once, on Redis as here)."""


@dataclass(slots=True)
class _Value:
    data: bytes | set[str] | dict[str, bytes]
    expires_at: float | None


@dataclass(slots=True)
class _Stream:
    entries: deque[tuple[StreamId, bytes]] = field(default_factory=deque)
    last: StreamId = (0, 0)
    max_deleted: StreamId | None = None
    expires_at: float | None = None


class MemoryStore(MemoryRuns, StateStore):
    def __init__(
        self,
        ttls: TTLs,
        stream_max_len: int,
        sweep_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if stream_max_len < 1:
            raise ValueError("stream_max_len must be at least 1")
        MemoryRuns.__init__(self)
        self.url = "memory://"
        self.ttls = ttls
        self.stream_max_len = stream_max_len
        self._sweep_interval = sweep_interval
        self._clock = clock
        self._values: dict[str, _Value] = {}
        self._streams: dict[str, _Stream] = {}
        self._wakeups: dict[str, anyio.Event] = {}
        self._followers: dict[str, int] = {}
        self._channels: dict[str, set[MemoryObjectSendStream[JsonObject]]] = {}
        self._last_sweep = clock()
        self._closed = False
        self._runs: dict[str, deque[bytes]] = {}
        self._candidates: dict[str, dict[str, tuple[bytes, int]]] = {}
        """Learning, kept for the life of the process (bounded by `keep`, MAX_CANDIDATES)."""

    async def start(self) -> None:
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True
        for wakeup in self._wakeups.values():
            wakeup.set()
        for senders in self._channels.values():
            for sender in senders:
                sender.close()

    async def ping(self) -> None:
        return None

    def status(self) -> StoreStatus:
        return StoreStatus(
            ready=not self._closed, url=self.url, reason="closed" if self._closed else None
        )

    # --- plumbing ----------------------------------------------------------------------

    def _expiry(self, ttl: float) -> float:
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, got {ttl}")
        return self._clock() + ttl

    def _live(self, key: str) -> _Value | None:
        value = self._values.get(key)
        if value is not None and value.expires_at is not None and value.expires_at <= self._clock():
            del self._values[key]
            return None
        return value

    def _live_stream(self, key: str) -> _Stream | None:
        stream = self._streams.get(key)
        if (
            stream is not None
            and stream.expires_at is not None
            and stream.expires_at <= self._clock()
        ):
            del self._streams[key]
            return None
        return stream

    def _write(self, key: str, data: bytes | set[str] | dict[str, bytes], ttl: float) -> None:
        self._values[key] = _Value(data, self._expiry(ttl))
        self._maybe_sweep()

    async def _set_value(self, key: str, value: Mapping[str, Any], ttl: float) -> None:
        self._write(key, codec.encode(value), ttl)

    async def _get_value(self, key: str) -> JsonObject | None:
        value = self._live(key)
        if value is None or not isinstance(value.data, bytes):
            return None
        return codec.decode(value.data, key)

    async def _take_value(self, key: str) -> JsonObject | None:
        found = await self._get_value(key)
        self._values.pop(key, None)
        return found

    async def index_session(self, org: str, user: str, session_id: str, created: float) -> None:
        key = sessions_index_key(org, user)
        index = self._live(key)
        entries = index.data if index is not None and isinstance(index.data, dict) else {}
        entries[session_id] = repr(created).encode()
        self._write(key, entries, self.ttls.session)

    async def indexed_sessions(
        self, org: str, user: str, before: float | None, limit: int
    ) -> list[tuple[str, float]]:
        index = self._live(sessions_index_key(org, user))
        if index is None or not isinstance(index.data, dict):
            return []
        found = [(session_id, float(created)) for session_id, created in index.data.items()]
        if before is not None:
            found = [entry for entry in found if entry[1] < before]
        found.sort(key=lambda entry: (entry[1], entry[0]), reverse=True)
        return found[:limit]

    async def unindex_sessions(self, org: str, user: str, session_ids: Sequence[str]) -> None:
        index = self._live(sessions_index_key(org, user))
        if index is not None and isinstance(index.data, dict):
            for session_id in session_ids:
                index.data.pop(session_id, None)

    def _maybe_sweep(self) -> None:
        now = self._clock()
        if now - self._last_sweep < self._sweep_interval:
            return
        self._last_sweep = now
        for key in [k for k, v in self._values.items() if v.expires_at and v.expires_at <= now]:
            del self._values[key]
        for key in [k for k, s in self._streams.items() if s.expires_at and s.expires_at <= now]:
            del self._streams[key]

    # --- sessions ----------------------------------------------------------------------

    async def set_claimed_session_state(
        self, session_id: str, state: Mapping[str, Any], owner: str, ttl: float | None = None
    ) -> bool:
        encoded = codec.encode(state)
        if not self._holds(session_id, owner):
            return False
        self._write(session_key(session_id), encoded, ttl or self.ttls.session)
        return True

    async def session_ids(self) -> list[str]:
        return [
            session_id
            for key in list(self._values)
            if (session_id := session_id_of(key)) is not None and self._live(key) is not None
        ]

    def _holds(self, session_id: str, owner: str) -> bool:
        claim = self._live(session_claim_key(session_id))
        return claim is not None and claim.data == owner.encode()

    async def claim_session(self, session_id: str, owner: str, seconds: float) -> bool:
        claim = self._live(session_claim_key(session_id))
        if claim is not None and claim.data != owner.encode():
            return False
        self._write(session_claim_key(session_id), owner.encode(), seconds)
        return True

    async def release_session(self, session_id: str, owner: str) -> None:
        if self._holds(session_id, owner):
            del self._values[session_claim_key(session_id)]

    async def touch_session(self, session_id: str) -> bool:
        state = self._live(session_key(session_id))
        if state is None:
            return False
        state.expires_at = self._expiry(self.ttls.session)
        flows = self._live(session_flows_key(session_id))
        if flows is not None and isinstance(flows.data, set):
            flows.expires_at = self._expiry(self.ttls.flow)
            for flow_id in flows.data:
                flow = self._live(flow_key(session_id, flow_id))
                if flow is not None:
                    flow.expires_at = self._expiry(self.ttls.flow)
        for stream in Stream:
            live = self._live_stream(stream_key(session_id, stream))
            if live is not None:
                live.expires_at = self._expiry(self.ttls.stream(stream))
        return True

    async def delete_session(self, session_id: str) -> None:
        flows = self._live(session_flows_key(session_id))
        if flows is not None and isinstance(flows.data, set):
            for flow_id in flows.data:
                self._values.pop(flow_key(session_id, flow_id), None)
        self._values.pop(session_flows_key(session_id), None)
        self._values.pop(session_claim_key(session_id), None)
        self._values.pop(session_key(session_id), None)
        for stream in Stream:
            self._streams.pop(stream_key(session_id, stream), None)

    # --- flows -------------------------------------------------------------------------

    async def get_flow_state(self, session_id: str, flow_id: str) -> JsonObject | None:
        key = flow_key(session_id, flow_id)
        value = self._live(key)
        if value is None or not isinstance(value.data, dict):
            return None
        return assembled(value.data, key)

    async def set_flow_state(
        self, session_id: str, flow_id: str, state: Mapping[str, Any], ttl: float | None = None
    ) -> None:
        self._flow_fields(session_id, flow_id, flow_fields(state), ttl, replace=True)

    async def update_flow_state(
        self, session_id: str, flow_id: str, changes: Mapping[str, Any], ttl: float | None = None
    ) -> None:
        self._flow_fields(session_id, flow_id, flow_fields(changes), ttl, replace=False)

    def _flow_fields(
        self,
        session_id: str,
        flow_id: str,
        fields: dict[str, bytes],
        ttl: float | None,
        replace: bool,
    ) -> None:
        held = self._live(flow_key(session_id, flow_id))
        if not replace and held is not None and isinstance(held.data, dict):
            held.data.update(fields)  # in place: a step's write costs that step's fields
            fields = held.data
        ttl = ttl or self.ttls.flow
        index = self._live(session_flows_key(session_id))
        flows = index.data if index is not None and isinstance(index.data, set) else set()
        flows.add(flow_id)
        # The index outlives every flow it lists, so a touch can always reach them.
        index_ttl = max(ttl, index.expires_at - self._clock() if index and index.expires_at else 0)
        self._write(session_flows_key(session_id), flows, index_ttl)
        self._write(flow_key(session_id, flow_id), fields, ttl)

    # --- streams -----------------------------------------------------------------------

    async def append(self, session_id: str, stream: Stream, event: Mapping[str, Any]) -> str:
        return self._append(session_id, stream, [codec.encode(event)])[0]

    async def append_many(
        self, session_id: str, stream: Stream, events: Sequence[Mapping[str, Any]]
    ) -> list[str]:
        return self._append(session_id, stream, [codec.encode(event) for event in events])

    async def append_claimed(
        self, session_id: str, stream: Stream, event: Mapping[str, Any], owner: str
    ) -> str | None:
        encoded = codec.encode(event)
        if not self._holds(session_id, owner):
            return None
        return self._append(session_id, stream, [encoded])[0]

    async def record_flow_run(self, org: str, flow: str, run: Mapping[str, Any], keep: int) -> None:
        runs = self._runs.setdefault(flow_runs_key(org, flow), deque())
        runs.appendleft(codec.encode(run))
        while len(runs) > keep:
            runs.pop()

    async def flow_runs(self, org: str, flow: str, most: int) -> list[JsonObject]:
        key = flow_runs_key(org, flow)
        runs = list(self._runs.get(key, ()))[:most]
        return [codec.decode(raw, key) for raw in runs]

    async def flow_names(self, org: str) -> list[str]:
        prefix = flow_runs_key(org, "")
        return sorted(key[len(prefix) :] for key in self._runs if key.startswith(prefix))

    async def count_candidate(self, org: str, shape: str, candidate: Mapping[str, Any]) -> int:
        kept = self._candidates.setdefault(candidates_key(org), {})
        body, count = kept.get(shape, (codec.encode(candidate), 0))
        if shape not in kept and len(kept) >= MAX_CANDIDATES:
            return 0
        kept[shape] = (body, count + 1)
        return count + 1

    async def flow_candidates(self, org: str) -> list[tuple[str, JsonObject, int]]:
        key = candidates_key(org)
        kept = self._candidates.get(key, {})
        return [(shape, codec.decode(body, key), count) for shape, (body, count) in kept.items()]

    def _append(self, session_id: str, stream: Stream, encoded: list[bytes]) -> list[str]:
        if not encoded:
            return []
        key = stream_key(session_id, stream)
        live = self._live_stream(key)
        if live is None:
            live = self._streams[key] = _Stream()
        now_ms = int(time.time() * 1000)
        ids: list[str] = []
        for raw in encoded:
            ms, seq = live.last
            new_id = (now_ms, 0) if now_ms > ms else (ms, seq + 1)
            live.entries.append((new_id, raw))
            live.last = new_id
            ids.append(format_id(new_id))
        while len(live.entries) > self.stream_max_len:
            live.max_deleted = live.entries.popleft()[0]
        live.expires_at = self._expiry(self.ttls.stream(stream))
        wakeup = self._wakeups.pop(key, None)
        if wakeup is not None:
            wakeup.set()
        self._maybe_sweep()
        return ids

    async def read(
        self, session_id: str, stream: Stream, after_id: str = START, limit: int = 100
    ) -> StreamBatch:
        return self._read(stream_key(session_id, stream), after_id, parse_id(after_id), limit)

    def _read(self, key: str, after_id: str, after: StreamId, limit: int) -> StreamBatch:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        live = self._live_stream(key)
        if live is None:
            # A reader that saw events of a stream now expired has lost whatever followed.
            gap = StreamGap(after_id, None) if after != (0, 0) else None
            return StreamBatch((), gap)
        gap = None
        if live.max_deleted is not None and after < live.max_deleted:
            gap = StreamGap(after_id, format_id(live.max_deleted))
        start = bisect.bisect_right(live.entries, after, key=lambda entry: entry[0])
        events = tuple(
            StreamEvent(format_id(entry_id), codec.decode(raw, key))
            for entry_id, raw in (
                live.entries[i] for i in range(start, min(start + limit, len(live.entries)))
            )
        )
        return StreamBatch(events, gap)

    async def follow(
        self, session_id: str, stream: Stream, after_id: str = START
    ) -> AsyncGenerator[StreamBatch, None]:
        key = stream_key(session_id, stream)
        after = parse_id(after_id)
        self._followers[key] = self._followers.get(key, 0) + 1
        try:
            while not self._closed:
                # Take the wake-up before reading, so an append between the read and the
                # wait still wakes this follower.
                wakeup = self._wakeups.get(key)
                if wakeup is None:
                    wakeup = self._wakeups[key] = anyio.Event()
                batch = self._read(key, format_id(after), after, 100)
                if batch.events or batch.gap:
                    if batch.events:
                        after = parse_id(batch.events[-1].id)
                    elif batch.gap is not None:
                        lost = batch.gap.lost_through
                        after = parse_id(lost) if lost is not None else (0, 0)
                    yield batch
                    continue
                await wakeup.wait()
        finally:
            self._followers[key] -= 1
            if not self._followers[key]:
                del self._followers[key]
                wakeup = self._wakeups.get(key)
                if wakeup is not None and not wakeup.is_set():
                    del self._wakeups[key]

    # --- pub/sub -----------------------------------------------------------------------

    async def pub_event(self, session_id: str, payload: Mapping[str, Any]) -> int:
        channel = channel_name(session_id)
        data = codec.decode(codec.encode(payload), channel)
        delivered = 0
        for sender in list(self._channels.get(channel, ())):
            try:
                sender.send_nowait(data)
                delivered += 1
            except anyio.WouldBlock:
                logger.warning(
                    "subscriber of %s is %d behind; payload dropped", channel, SUBSCRIBER_BUFFER
                )
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
        return delivered

    @asynccontextmanager
    async def subscribe(self, session_id: str) -> AsyncIterator[AsyncIterator[JsonObject]]:
        channel = channel_name(session_id)
        sender, receiver = anyio.create_memory_object_stream[JsonObject](SUBSCRIBER_BUFFER)
        self._channels.setdefault(channel, set()).add(sender)
        try:
            async with receiver:
                yield receiver
        finally:
            senders = self._channels.get(channel)
            if senders is not None:
                senders.discard(sender)
                if not senders:
                    del self._channels[channel]
            sender.close()

    # --- diagnostics -------------------------------------------------------------------

    async def debug_keys(self, pattern: str = "*") -> dict[str, float | None]:
        now = self._clock()
        found: dict[str, float | None] = {}
        for key in list(self._values):
            value = self._live(key)
            if value is not None and fnmatch.fnmatchcase(key, pattern):
                found[key] = None if value.expires_at is None else value.expires_at - now
        for key in list(self._streams):
            stream = self._live_stream(key)
            if stream is not None and fnmatch.fnmatchcase(key, pattern):
                found[key] = None if stream.expires_at is None else stream.expires_at - now
        return found
