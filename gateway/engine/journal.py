"""What a session's stream says happened after its snapshot: the story a resume reads when
the engine that ran the session stopped mid-turn (a crash, a kill, a lost claim).

A snapshot is written at every turn's end and state change; between two, the stream holds
the turn's envelope and its calls, each an `intent` (with its key) before it was sent and a
`result` after. Resuming, the engine acts on the envelope again, call by call under the
same keys: a call with a result is not made again but told as it was (its full result from
`STREAM:{id}:tool_results`); one with an intent and no result may or may not have reached
its upstream, so it is sent again only when its tool is safe to repeat (read-only or
idempotent) or the user says so, and the key it is sent with is the same.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ..state.base import START, StateStore, Stream, StreamEvent

logger = logging.getLogger("gateway.engine")

READ_BATCH: Final = 500
READ_MAX: Final = 20_000
"""Events read of a stream at most: a turn writes a handful per call."""

Settled = Literal["resend", "skip"]
"""The user's word on a call whose outcome is unknown: send it again, or tell the model
it was not."""


@dataclass(slots=True)
class Journal:
    after: str
    """The event this journal starts after (a snapshot's last, or an earlier turn's)."""
    events: list[dict[str, Any]] = field(default_factory=list)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The latest `intent` event of each key."""
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    """`result` events by key."""
    full: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Full results (tool_results) by key, of the calls with a `result` event."""
    settled: dict[str, Settled] = field(default_factory=dict)
    """The user's word on calls of unknown outcome (`approval_decided` events' `settled`),
    until the call is sent again: a new attempt's outcome needs a new word."""

    @classmethod
    async def read(cls, store: StateStore, session_id: str, after: str) -> Journal:
        journal = cls(after)
        async for event in stream_events(store, session_id, Stream.EVENTS, after):
            data = dict(event.data)
            journal.events.append(data)
            key = data.get("key")
            type_ = data.get("type")
            if type_ == "intent" and isinstance(key, str):
                journal.intents[key] = data
                journal.settled.pop(key, None)
            elif type_ == "result" and isinstance(key, str):
                journal.results[key] = data
            elif type_ == "approval_decided" and isinstance(data.get("settled"), dict):
                journal.settled.update(data["settled"])
        if journal.results:
            # From the stream's start: what trimming left of it is what there is.
            async for event in stream_events(store, session_id, Stream.TOOL_RESULTS, START):
                data = dict(event.data)
                key = data.get("key")
                if isinstance(key, str) and key in journal.results:
                    journal.full[key] = data
        return journal

    def last(self, type_: str) -> dict[str, Any] | None:
        return next((e for e in reversed(self.events) if e.get("type") == type_), None)

    def acted(self, prefix: str) -> bool:
        """Whether any call of the turn whose keys start `prefix` was under way."""
        return any(key.startswith(prefix) for key in self.intents)

    def unknown(self, prefix: str) -> list[dict[str, Any]]:
        """The intents of the turn whose keys start `prefix` that have no result and no
        word from the user: whether they reached their upstream is unknown."""
        return [
            intent
            for key, intent in self.intents.items()
            if key.startswith(prefix) and key not in self.results and key not in self.settled
        ]


async def stream_events(
    store: StateStore, session_id: str, stream: Stream, after: str, most: int = READ_MAX
) -> AsyncIterator[StreamEvent]:
    """The events of a session's stream after `after`, in batches, `most` of them at most
    (a truncated read is logged)."""
    cursor = after
    for _ in range(max(1, most // READ_BATCH)):
        batch = await store.read(session_id, stream, cursor, min(READ_BATCH, most))
        for event in batch.events:
            yield event
        if len(batch.events) < min(READ_BATCH, most):
            return
        cursor = batch.events[-1].id
    logger.warning(
        "session %s: read the first %d events of its %s stream after %s, no more",
        session_id,
        most,
        stream.value,
        after,
    )
