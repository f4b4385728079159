"""The state store's contract: one async interface, its key names, TTLs and errors.

Two implementations keep the same semantics: `MemoryStore` (in-process, the default) and
`RedisStore` (shared by replicas). Everything session-scoped lives here: session state, flow
state, and the sessions' event streams.

Key names are fixed. The braces are literal: they are Redis Cluster hash tags, so every key
of one session (`SESSION:{s1}`, `STREAM:{s1}:events`, `FLOW:{s1}:{flow_refund}`) lives in
one slot. Values inside braces are escaped (`{`, `}`, `:` and `%` as `%7B`, `%7D`, `%3A`,
`%25`) so that no id can forge another key or split a hash tag.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, Self

from ..errors import InvalidStreamId, StateDecodeError

JsonObject = dict[str, Any]
"""What the store keeps: JSON objects (encoded by `gateway.state.codec`)."""


class Stream(StrEnum):
    EVENTS = "events"
    """Everything that happens in a session, for the session API's SSE and WebSocket."""
    TOOL_EXECUTION = "tool_execution"
    """Tool calls in flight."""
    TOOL_RESULTS = "tool_results"
    """Tool call results."""


@dataclass(frozen=True, slots=True)
class TTLs:
    """Seconds each kind of key lives after its last write (or a session's last activity)."""

    session: float = 2 * 3600
    events: float = 3600
    tool_execution: float = 5 * 60
    tool_results: float = 10 * 60
    flow: float = 2 * 3600
    learning: float = 30 * 24 * 3600
    """Flow statistics and candidate flows (renewed by every run)."""

    def stream(self, stream: Stream) -> float:
        ttl: float = getattr(self, stream.value)
        return ttl


MAX_CANDIDATES = 1_000
"""Candidate flows kept per org: shapes past these are not counted."""

DEFAULT_STREAM_MAX_LEN = 10_000
"""Events kept per stream; older ones are trimmed (and a read past them reports a gap)."""


# --- key names -----------------------------------------------------------------------------


def _part(value: str) -> str:
    return value.replace("%", "%25").replace("{", "%7B").replace("}", "%7D").replace(":", "%3A")


def session_key(session_id: str) -> str:
    return f"SESSION:{{{_part(session_id)}}}"


def session_flows_key(session_id: str) -> str:
    """The set of a session's flow ids, so that touching a session reaches its flows."""
    return f"SESSION:{{{_part(session_id)}}}:flows"


def session_id_of(key: str) -> str | None:
    """The session whose state `key` is (`session_key`'s inverse); None for other keys."""
    if not (key.startswith("SESSION:{") and key.endswith("}")) or "}" in key[9:-1]:
        return None
    escaped = key[9:-1]
    return escaped.replace("%7B", "{").replace("%7D", "}").replace("%3A", ":").replace("%25", "%")


def session_claim_key(session_id: str) -> str:
    """Who acts on the session now (`claim_session`): one owner at a time, for a lease."""
    return f"SESSION:{{{_part(session_id)}}}:claim"


def cancel_key(session_id: str) -> str:
    """A request to cancel the session (`request_cancel`), for whichever engine runs it."""
    return f"SESSION:{{{_part(session_id)}}}:cancel"


def sessions_index_key(org: str, user: str) -> str:
    """A user's sessions by creation time (`index_session`), in the org's slot."""
    return f"SESSIONS:{{{_part(org)}}}:{_part(user)}"


RUNS_KEY = "RUNS"
"""The run queue (a stream): one entry per run of a session under way, pending in the
consumer group RUNS_GROUP for the replica running it (`enlist_run`)."""
RUNS_GROUP = "engines"


def token_key(token: str) -> str:
    """A single-use token (`put_token`), by its digest: the store never holds one usable."""
    return f"TOKEN:{{{hashlib.sha256(token.encode()).hexdigest()}}}"


def stream_key(session_id: str, stream: Stream) -> str:
    return f"STREAM:{{{_part(session_id)}}}:{stream.value}"


def flow_key(session_id: str, flow_id: str) -> str:
    return f"FLOW:{{{_part(session_id)}}}:{{{_part(flow_id)}}}"


def flow_runs_key(org: str, flow: str) -> str:
    """The latest runs of an org's flow (learning: gateway/flows/learning.py)."""
    return f"FLOWSTATS:{{{_part(org)}}}:{_part(flow)}"


def flow_names_key(org: str) -> str:
    """The names of an org's flows that have runs recorded."""
    return f"FLOWSTATS:{{{_part(org)}}}"


def candidates_key(org: str) -> str:
    """An org's candidate flows (generated plans that completed), by shape."""
    return f"FLOWCANDIDATES:{{{_part(org)}}}"


def candidate_counts_key(org: str) -> str:
    return f"FLOWCANDIDATES:{{{_part(org)}}}:counts"


def flow_fields(state: Mapping[str, Any]) -> dict[str, bytes]:
    """A flow state's fields as stored (update_flow_state): each value encoded alone."""
    return {name: codec_field(value) for name, value in state.items()}


def codec_field(value: Any) -> bytes:
    from . import codec  # codec reads this module's JsonObject

    return codec.encode({"value": value})


def assembled(fields: Mapping[Any, Any], key: str) -> JsonObject:
    """A flow state from its stored fields: `a` as it is, then each `a.b` into `a`."""
    from . import codec

    state: JsonObject = {}
    dotted = []
    for raw_name, raw in fields.items():
        try:
            name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
            value = codec.decode(raw, key)["value"]
        except (KeyError, UnicodeDecodeError) as exc:
            raise StateDecodeError(
                f"{key}: a field of the flow's state is damaged: {exc}"
            ) from None
        if "." in name:
            dotted.append((name, value))
        else:
            state[name] = value
    for name, value in dotted:
        section, entry = name.split(".", 1)
        held = state.get(section)
        if not isinstance(held, dict):
            held = state[section] = {}
        held[entry] = value
    return state


def channel_name(session_id: str) -> str:
    """The pub/sub channel of `pub_event` and `subscribe`."""
    return f"NOTIFY:{{{_part(session_id)}}}"


# --- stream ids ----------------------------------------------------------------------------

START = "0-0"
"""The id before every event: `read(..., after_id=START)` reads from the beginning."""


_STREAM_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
_MAX_PART = 2**64 - 1


def parse_id(event_id: str) -> tuple[int, int]:
    """A stream id, `<milliseconds>-<sequence>` as Redis writes them (each part an
    unsigned 64-bit number, in ASCII digits), as a sortable pair."""
    match = _STREAM_ID.fullmatch(event_id)
    if match is None:
        raise InvalidStreamId(event_id)
    parsed = (int(match.group(1)), int(match.group(2) or 0))
    if parsed[0] > _MAX_PART or parsed[1] > _MAX_PART:
        raise InvalidStreamId(event_id)
    return parsed


def format_id(parsed: tuple[int, int]) -> str:
    return f"{parsed[0]}-{parsed[1]}"


@dataclass(frozen=True, slots=True)
class StreamEvent:
    id: str
    data: JsonObject


@dataclass(frozen=True, slots=True)
class StreamGap:
    """Events after `after_id` up to `lost_through` were trimmed or expired unread."""

    after_id: str
    lost_through: str | None
    """The newest id known to be lost; None when the whole stream expired."""


@dataclass(frozen=True, slots=True)
class StreamBatch:
    events: tuple[StreamEvent, ...]
    gap: StreamGap | None = None
    """Set when events the reader has not seen are gone: it must not assume continuity."""

    @property
    def last_id(self) -> str | None:
        return self.events[-1].id if self.events else None


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """Readiness as `/ready` reports it."""

    ready: bool
    url: str
    """With any password replaced by `***`."""
    reason: str | None = None


# --- the interface -------------------------------------------------------------------------


class StateStore(ABC):
    """What every backend provides. Use it as an async context manager (or call `start`
    and `aclose`). Every operation either completes or raises a `StateError`."""

    url: str
    ttls: TTLs

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abstractmethod
    async def start(self) -> None:
        """Connect and start background work."""

    @abstractmethod
    async def aclose(self) -> None:
        """Stop background work and release connections. Ends every `follow`."""

    @abstractmethod
    async def ping(self) -> None:
        """Return when the backend answers; raise StateUnavailable otherwise."""

    @abstractmethod
    def status(self) -> StoreStatus:
        """Ready or not, and why not, without a round trip (kept up by the store)."""

    async def probe(self) -> StoreStatus:
        """Ready or not, checked against the backend: what `/ready` answers. Bounded in
        time, and a backend's check is cached briefly, so that however often it is asked
        the backend sees at most a few checks a second."""
        return self.status()

    # the two primitives every value goes through

    @abstractmethod
    async def _get_value(self, key: str) -> JsonObject | None:
        """The decoded value at `key`, None when absent or expired."""

    @abstractmethod
    async def _set_value(self, key: str, value: Mapping[str, Any], ttl: float) -> None:
        """Encode and store `value` at `key` with `ttl` seconds to live."""

    @abstractmethod
    async def _take_value(self, key: str) -> JsonObject | None:
        """`_get_value` and delete it, at once: of two takers, one gets it."""

    # sessions

    async def get_session_state(self, session_id: str) -> JsonObject | None:
        return await self._get_value(session_key(session_id))

    async def set_session_state(
        self, session_id: str, state: Mapping[str, Any], ttl: float | None = None
    ) -> None:
        await self._set_value(session_key(session_id), state, ttl or self.ttls.session)

    @abstractmethod
    async def set_claimed_session_state(
        self, session_id: str, state: Mapping[str, Any], owner: str, ttl: float | None = None
    ) -> bool:
        """`set_session_state`, only while `owner` holds the session's claim: False, and
        nothing written, when it does not (a lease that lapsed, taken by another)."""

    @abstractmethod
    async def session_ids(self) -> list[str]:
        """The ids of every session with state. It scans: for operators and recovery at
        start-up, not for hot paths."""

    # claims: one replica acts on a session at a time

    @abstractmethod
    async def claim_session(self, session_id: str, owner: str, seconds: float) -> bool:
        """Hold the session's claim as `owner` for `seconds` (a lease, renewed by claiming
        again); False when another owner holds it. Not renewed, it lapses, so a session
        whose owner died can be taken on by another."""

    @abstractmethod
    async def release_session(self, session_id: str, owner: str) -> None:
        """Give the claim up, if `owner` holds it."""

    @abstractmethod
    async def touch_session(self, session_id: str) -> bool:
        """Renew the TTL of every key of the session (state, streams, flows) to its
        configured value. False when the session has no state (expired or never set)."""

    @abstractmethod
    async def delete_session(self, session_id: str) -> None:
        """Remove every key of the session."""

    async def request_cancel(self, session_id: str, mode: str) -> None:
        """Ask whichever engine runs the session (now, or when it resumes) to cancel it;
        `mode`: immediate, or after_step (after what runs now). Kept as long as a session."""
        await self._set_value(cancel_key(session_id), {"mode": mode}, self.ttls.session)

    async def cancel_request(self, session_id: str) -> str | None:
        """The mode of the session's cancel request, if one was made."""
        found = await self._get_value(cancel_key(session_id))
        mode = None if found is None else found.get("mode")
        return mode if isinstance(mode, str) else None

    # a user's sessions, newest first (the session API's listing)

    @abstractmethod
    async def index_session(self, org: str, user: str, session_id: str, created: float) -> None:
        """Add the session to its user's index (kept as long as a session, renewed by
        every addition; a listed session whose state expired is dropped by its reader)."""

    @abstractmethod
    async def indexed_sessions(
        self, org: str, user: str, before: float | None, limit: int
    ) -> list[tuple[str, float]]:
        """Up to `limit` (id, created) of the user's sessions created before `before`
        (all when None), newest first."""

    @abstractmethod
    async def unindex_sessions(self, org: str, user: str, session_ids: Sequence[str]) -> None:
        """Drop sessions from the user's index (their state is gone)."""

    # the run queue: which runs are under way, and whose runner went silent

    @abstractmethod
    async def enlist_run(self, session_id: str, runner: str) -> str:
        """Queue a run of the session, pending for `runner` (a replica's name) at once;
        returns its entry. Its runner renews it (`renew_run`) as it renews its claim."""

    @abstractmethod
    async def renew_run(self, entry: str, runner: str) -> bool:
        """The run is alive, run by `runner` (its silence starts again from now); False
        when the entry is gone (another replica found the session held, and dropped it):
        the runner enlists the run again."""

    @abstractmethod
    async def end_run(self, entry: str) -> None:
        """The run let go of its session (it waits, ended, or another took it over)."""

    @abstractmethod
    async def lapsed_runs(self, runner: str, silent: float, most: int) -> list[tuple[str, str]]:
        """Take over, for `runner`, up to `most` runs whose runner has renewed nothing
        for `silent` seconds: (entry, session id). Of two replicas asking at once, each
        run goes to one (on Redis: XAUTOCLAIM)."""

    # single-use tokens (a WebSocket's credential, which a browser cannot send as a header)

    async def put_token(self, token: str, value: Mapping[str, Any], ttl: float) -> None:
        await self._set_value(token_key(token), value, ttl)

    async def take_token(self, token: str) -> JsonObject | None:
        """What the token was put with, once: a second take, or one after its TTL, None."""
        return await self._take_value(token_key(token))

    # flows

    @abstractmethod
    async def get_flow_state(self, session_id: str, flow_id: str) -> JsonObject | None:
        """The flow's state as set and updated (None when there is none)."""

    @abstractmethod
    async def set_flow_state(
        self, session_id: str, flow_id: str, state: Mapping[str, Any], ttl: float | None = None
    ) -> None:
        """Replace the flow's state with `state` (a key with a dot is an entry, as
        update_flow_state says)."""

    @abstractmethod
    async def update_flow_state(
        self, session_id: str, flow_id: str, changes: Mapping[str, Any], ttl: float | None = None
    ) -> None:
        """Write `changes` into the flow's state: a key `a` sets its field `a`, a key
        `a.b` the entry `b` of its field `a` (a mapping). Each is a field of its own in
        the store, so a flow's progress is written a step at a time, not as a whole."""

    # learning (per org, shared by replicas; gateway/flows/learning.py)

    @abstractmethod
    async def record_flow_run(self, org: str, flow: str, run: Mapping[str, Any], keep: int) -> None:
        """Add a run of `flow` to the org's record of it, keeping the latest `keep`."""

    @abstractmethod
    async def flow_runs(self, org: str, flow: str, most: int) -> list[JsonObject]:
        """The latest `most` runs of `flow`, newest first."""

    @abstractmethod
    async def flow_names(self, org: str) -> list[str]:
        """The org's flows that have runs recorded, by name."""

    @abstractmethod
    async def count_candidate(self, org: str, shape: str, candidate: Mapping[str, Any]) -> int:
        """Count one more run of the candidate flow `shape` (kept as `candidate` the first
        time); how many there have been."""

    @abstractmethod
    async def flow_candidates(self, org: str) -> list[tuple[str, JsonObject, int]]:
        """The org's candidate flows: (shape, candidate, count)."""

    # streams

    @abstractmethod
    async def append(self, session_id: str, stream: Stream, event: Mapping[str, Any]) -> str:
        """Add `event`; returns its id. Ids of one stream increase with every append."""

    @abstractmethod
    async def append_claimed(
        self, session_id: str, stream: Stream, event: Mapping[str, Any], owner: str
    ) -> str | None:
        """`append`, only while `owner` holds the session's claim: None, and nothing
        written, when it does not (a lease that lapsed, taken by another)."""

    @abstractmethod
    async def append_many(
        self, session_id: str, stream: Stream, events: Sequence[Mapping[str, Any]]
    ) -> list[str]:
        """Add `events` in order, in one round trip; returns their ids. All or none are
        encoded before anything is written (a bad event writes nothing)."""

    @abstractmethod
    async def read(
        self, session_id: str, stream: Stream, after_id: str = START, limit: int = 100
    ) -> StreamBatch:
        """Up to `limit` events with ids after `after_id`, oldest first."""

    @abstractmethod
    def follow(
        self, session_id: str, stream: Stream, after_id: str = START
    ) -> AsyncGenerator[StreamBatch, None]:
        """Batches of new events as they are appended, waiting (without polling) between
        them; a batch may carry only a gap. While the backend is unavailable it waits and
        then reads on from where it was. Ends when the store closes."""

    # pub/sub: wakes other replicas up; at most once, so nothing that must arrive goes here

    @abstractmethod
    async def pub_event(self, session_id: str, payload: Mapping[str, Any]) -> int:
        """Publish `payload` to the session's subscribers; returns how many received it
        (on Redis: how many replicas' subscriptions; on a Redis Cluster only those on the
        node that took the message, so 0 there does not mean nobody got it)."""

    @abstractmethod
    def subscribe(self, session_id: str) -> AbstractAsyncContextManager[AsyncIterator[JsonObject]]:
        """`async with store.subscribe(sid) as events: async for payload in events: ...`.
        Subscribed once the `async with` is entered."""

    # diagnostics

    @abstractmethod
    async def debug_keys(self, pattern: str = "*") -> dict[str, float | None]:
        """Every live key matching the glob `pattern`, with its remaining TTL in seconds
        (None for none). For operators and tests; it scans, so not for hot paths."""
