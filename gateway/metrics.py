"""Prometheus metrics for the gateway's `/metrics`, fed by the hooks the gateway already has:
the call service's outcome hook (every tool call, from every door), the /mcp endpoint's
request hook, the session API's requests (`observe_request`) and the engine's event hook
(every event a session writes). Nothing here is asked for on a request's way: the hooks
tell, `render` reads at scrape time.

Each `Metrics` owns its registry (never prometheus-client's global one), so several
gateways in one process (the tests) do not collide; it carries the process, platform and
GC collectors the global registry would have had.

Labels are bounded: an upstream's name (from gateway.yaml), a decision or an end (the
call service's own words), a route template (`/sessions/{id}`, never a path), an HTTP
method (one of the standard ones, else `other`), a status, an event's kind or a session
state. Never a user, a tool's arguments, a session id or anything else a caller chooses.

The hooks run on hot paths, in the calling task: each is a few dictionary look-ups and
prometheus-client's own lock, and none raises. What does not fit (a field missing, of the
wrong type, negative, not finite, a state the engine does not have) is skipped; the rest
of the same record is still counted.

Room is left for more: a metric is one attribute made in `__init__` and one hook method
(the session API's event delivery histogram is expected next).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, TypeGuard

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from .engine.states import FINAL, SessionState

if TYPE_CHECKING:  # annotations only: the hooks' callers import this module, not it them
    from .calls.outcome import CallRecord
    from .engine.session import Session
    from .front.http import McpRequest

__all__ = ["Metrics"]

logger = logging.getLogger("gateway.metrics")

CALL_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
"""Seconds of a tool call: upstreams answer in milliseconds or in minutes (call_timeout)."""
HTTP_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
)
"""Seconds of an HTTP request: the fast path's tools/call takes about a millisecond, and a
streamed response (SSE on /mcp) lasts as long as its stream."""
METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
)
"""The HTTP methods kept as they are; any other (a server lets any token through) is
`other`, so that a client cannot mint label values."""
TOKENS: Final = (
    ("input_tokens", "input"),
    ("output_tokens", "output"),
    ("cache_read_tokens", "cache_read"),
    ("cache_write_tokens", "cache_write"),
)
"""The fields of an `envelope` event's `usage` (planners/base.py Usage), and their kind."""
STATES: Final = {state.value: state for state in SessionState}
LIVE: Final = tuple(state for state in SessionState if state not in FINAL)
"""The states `gateway_sessions` tells: a session in a final state is done with, counted
by `gateway_session_transitions_total{to}` (a gauge of those would only grow)."""
TURN_EVENTS: Final = frozenset({"envelope", "invalid_envelope"})
MAX_TRACKED: Final = 100_000
"""Live sessions whose state this process remembers. A session that waits for its caller
and goes on on another replica is never heard of here again: past this many, the longest
unchanged is forgotten (and leaves the gauge), so that memory stays bounded."""


class Metrics:
    """The gateway's metrics and the hooks that feed them: `record_call` for
    ToolService.on_outcome, `record_mcp` for McpEndpoint.on_request, `record_event` for
    Recorder.on_event, `observe_request` for the session API's requests; `render` for
    `/metrics`. Hooks are called from the event loop's thread (as the gateway's are)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        """Its own: two gateways in one process each count their own."""
        registry = self.registry
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self._tool_calls = Counter(
            "gateway_tool_calls",
            "Tool calls told to the call service's outcome hooks, from every door: `decision`"
            " is allowed, held or the refusal; `ended` how an allowed call ended (ok,"
            " tool_error, input_required, failed, cancelled), empty for the others;"
            " `upstream` empty for a call no upstream was chosen for.",
            ("upstream", "decision", "ended"),
            registry=registry,
        )
        self._tool_call_seconds = Histogram(
            "gateway_tool_call_seconds",
            "Seconds of the tool calls that were let through, from the permission check to"
            " the upstream's answer (or its failure).",
            ("upstream",),
            buckets=CALL_BUCKETS,
            registry=registry,
        )
        self._http_requests = Counter(
            "gateway_http_requests",
            "HTTP requests by route template, method and response status (0: none was sent,"
            " the client went away first).",
            ("route", "method", "status"),
            registry=registry,
        )
        self._http_seconds = Histogram(
            "gateway_http_request_seconds",
            "Seconds of HTTP requests: the session API's until its answer began (a stream:"
            " until it opened), /mcp's until it ended.",
            ("route", "method"),
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self._turns = Counter(
            "gateway_engine_turns",
            "Model turns of the engine's sessions (envelopes, valid or not).",
            registry=registry,
        )
        self._tokens = Counter(
            "gateway_engine_tokens",
            "Tokens the engine's model turns used, by kind (input, output, cache_read,"
            " cache_write).",
            ("kind",),
            registry=registry,
        )
        self._transitions = Counter(
            "gateway_session_transitions",
            "Session state changes this process wrote, by the state moved to.",
            ("to",),
            registry=registry,
        )
        self._sessions = Gauge(
            "gateway_sessions",
            "Live sessions (submitted, working, input_required) by state, as this replica"
            " last wrote or read them: per replica, not the cluster's; a session that"
            " goes on on another replica stays here at its last state seen here.",
            ("state",),
            registry=registry,
        )
        self._started = Counter(
            "gateway_sessions_started",
            "Sessions this process started (accepted).",
            registry=registry,
        )
        for _, kind in TOKENS:
            self._tokens.labels(kind)
        self._gauges = {state: self._sessions.labels(state.value) for state in LIVE}
        self._tracked: dict[str, SessionState] = {}
        """The live state each session is counted in by `gateway_sessions`: the gauge
        is moved only off a state it was moved onto, so it never goes below zero."""

    def render(self) -> tuple[bytes, str]:
        """The exposition text of every metric, and its content type, for `/metrics`."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def record_call(self, record: CallRecord) -> None:
        """The call service's outcome hook (ToolService.on_outcome): counts the call, and
        times it when it was let through (held and refused calls never ran)."""
        try:
            decision, upstream, ended = record.decision, record.upstream, record.ended
            if not isinstance(decision, str):
                return
            if not (upstream is None or isinstance(upstream, str)):
                return
            if not (ended is None or isinstance(ended, str)):
                return
            self._tool_calls.labels(upstream or "", decision, ended or "").inc()
            seconds = record.seconds
            if upstream is not None and ended is not None and _duration(seconds):
                self._tool_call_seconds.labels(upstream).observe(seconds)
        except Exception:  # a bug of ours: metrics never fail a call
            logger.exception("metrics: a call record not counted")

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One HTTP request that ended. `route` is its route template (`/sessions/{id}`),
        never the path requested: a path would mint a label value per session."""
        try:
            if not isinstance(route, str) or not isinstance(method, str) or not _integer(status):
                return
            verb = method if method in METHODS else "other"
            self._http_requests.labels(route, verb, str(int(status))).inc()
            if _duration(seconds):
                self._http_seconds.labels(route, verb).observe(seconds)
        except Exception:
            logger.exception("metrics: a request not counted")

    def record_mcp(self, request: McpRequest) -> None:
        """The /mcp endpoint's request hook (McpEndpoint.on_request), as route `/mcp`.
        The principal is not a label: users are not bounded."""
        try:
            self.observe_request("/mcp", request.method, request.status, request.seconds)
        except Exception:  # not a McpRequest
            logger.exception("metrics: an /mcp request not counted")

    def record_event(self, session: Session, type_: str, fields: Mapping[str, Any]) -> None:
        """The engine's event hook (Recorder.on_event): turns and their tokens from
        `envelope` / `invalid_envelope` events, starts from `accepted`, state changes from
        `state`, and the live sessions' gauge from every event (a session answered or
        resumed here is counted here from its first event here)."""
        try:
            if not isinstance(type_, str) or not isinstance(fields, Mapping):
                return
            session_id = session.id
            if not isinstance(session_id, str):
                return
            if type_ == "state":
                self._moved(session_id, fields.get("to"))
                return
            if session_id not in self._tracked:
                self._track(session_id, session.state)
            if type_ in TURN_EVENTS:
                self._turns.inc()
                usage = fields.get("usage")
                if isinstance(usage, Mapping):
                    self._count_tokens(usage)
            elif type_ == "accepted":
                self._started.inc()
        except Exception:
            logger.exception("metrics: a session event not counted")

    def _count_tokens(self, usage: Mapping[str, Any]) -> None:
        for field, kind in TOKENS:
            count = usage.get(field)
            if _integer(count) and count > 0:
                self._tokens.labels(kind).inc(count)

    def _moved(self, session_id: str, to: object) -> None:
        """A `state` event: off the state this process counted the session in (whatever
        the event says it came from: the gauge moves only off what it was moved onto),
        onto `to` while it is live."""
        state = STATES.get(to) if isinstance(to, str) else None
        if state is None:
            return
        self._transitions.labels(state.value).inc()
        before = self._tracked.pop(session_id, None)
        if before is not None:
            self._gauges[before].dec()
        self._track(session_id, state)

    def _track(self, session_id: str, state: SessionState) -> None:
        """Count a session not counted yet in its live `state` (nothing for a final one)."""
        gauge = self._gauges.get(state)
        if gauge is None:
            return
        if len(self._tracked) >= MAX_TRACKED:
            oldest = next(iter(self._tracked))
            self._gauges[self._tracked.pop(oldest)].dec()
        self._tracked[session_id] = state
        gauge.inc()


def _integer(value: object) -> TypeGuard[int]:
    """An int that is no bool (True is no status and no token count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _duration(seconds: object) -> bool:
    """Whether `seconds` can be observed: a finite, non-negative number (a NaN would make
    the histogram's sum NaN for good)."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return False
    return math.isfinite(seconds) and seconds >= 0
