"""Every private name of the MCP SDK that the gateway reaches, in one place, each checked
by `check()` at start-up against the installed SDK.

The SDK (mcp 2.3) has no public way to do what the gateway needs here, so it reaches in;
the `mcp==2.3.0` requirement pins what it reaches, and `check()` makes a mismatch a
start-up error naming the name, instead of a lost resume or a 500 per request. It is one
module, past the project's 500 lines, on purpose: a reviewer of an SDK upgrade reads every
private name, what is done with it and how it is checked in one file (and
tests/test_sdk_privates.py holds every other module to none).

What it reaches, and why there is no public way:

- `StreamableHTTPServerTransport` (a session's HTTP transport). The gateway's resumable
  streams (front/session_transport.py) override three private hooks, mapped to public
  names by `HookedTransport`: `_replay_events` (a `Last-Event-ID` resume; the SDK's reads
  the store before it registers for the live tail, losing what is stored in between),
  `_clean_up_memory_streams` (the SDK closes by key, and would close a resume's slot) and
  `_mint_priming_event` (a priming event that could not be stored must not be sent). A
  resume reads `_event_store` (the transport's event store, which the SDK does not
  expose), takes over the stream's slot in `_request_streams` and its writer in
  `_sse_stream_writers`, and frames events and refusals as the transport does
  (`_create_event_data`, `_create_error_response`).
- `StreamableHTTPSessionManager`. Each session gets the gateway's transport and its own
  view of the event store (`_admit_session`, which registers the session in
  `_server_instances` and `_session_owners`); an opening request while the store is away
  is a 503 (`_serve_opening_request`); an ended session takes its events with it
  (`_discard_session`). `HookedSessionManager` maps the three hooks to public names. The
  manager has no public lookup of a session's transport or owner either.
- `ServerSession._connection`: a handler's connection (its per-connection state and exit
  stack); `connection_of` is the only way there.
- For the handshake-era door (front/session_calls.py, session_stream.py), which serves
  tools/call and tools/list without the SDK's stack on a session the SDK opened: the
  transport's `_check_content_type` (the SDK's own Content-Type rule), `_retry_interval`
  (a session with one is left to the SDK), `_idle_timeout` and `_requests_in_flight` (the
  idle countdown held while a call runs, as `handle_request` holds it), and
  `_write_stream` (questions to the caller go through the transport's router). It also
  reads `_server_instances`, `_session_owners`, `_event_store` and `_request_streams`,
  which the pieces above need anyway.
- Private modules, imported only where they cannot stop the gateway from loading:
  `mcp.shared._context_streams` for the type of `_write_stream` (type checking only); and,
  for tests only and not checked at start-up, `mcp.server._streamable_http_modern`, where
  the 2026-era SSE transport keeps its keep-alive interval (`sse_ping_interval_site`,
  imported when called): a test that shortens it fails by itself if it is gone.

Besides the names reached, `check()` makes sure the SDK has not taken a name the gateway
uses: the public names the hooked classes add, and the private methods and instance
attributes of the gateway's subclasses of them (an SDK method of that name would call the
gateway's instead; an attribute both set would hold one side's state for the other).

Per name, what a mismatch does. The resumable streams and `_connection` are what every
session relies on: without them a resume would silently lose events, or every request
would fail, so `check()` raises `SdkMismatch` and `gateway serve`/`gateway stdio` exit with
its message. The names only the handshake-era door needs (`DOOR_ONLY`) turn that door off
instead (`door_problem()`, one warning when the door is built): the SDK then serves those
calls, as it does with `server.direct_calls: false`, slower but complete.
"""

from __future__ import annotations

import ast
import inspect
import logging
import math
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, Literal

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.auth.middleware.bearer_auth import AuthorizationContext
from mcp.server.connection import Connection
from mcp.server.lowlevel import Server
from mcp.server.session import ServerSession
from mcp.server.streamable_http import (
    EventCallback,
    EventId,
    EventMessage,
    EventStore,
    SSEEvent,
    StreamableHTTPServerTransport,
    StreamId,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.message import SessionMessage
from mcp_types import JSONRPCMessage, RequestId
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .errors import SdkMismatch

if TYPE_CHECKING:  # a private module: kept out of the import (see the docstring)
    from mcp.shared._context_streams import ContextSendStream

logger = logging.getLogger("gateway.sdk")

PINNED: Final = "mcp==2.3.0"
"""The requirement in pyproject.toml that pins the names below (a test keeps them equal)."""

Slot = tuple[MemoryObjectSendStream[EventMessage], MemoryObjectReceiveStream[EventMessage]]
"""A request stream's slot in a transport's `_request_streams`."""


def _installed_version() -> str:
    try:
        return version("mcp")
    except PackageNotFoundError:
        return "(version unknown)"


# --- session manager ---------------------------------------------------------------


def session_transport(
    manager: StreamableHTTPSessionManager, session_id: str
) -> StreamableHTTPServerTransport | None:
    """The transport of open session `session_id`, if the manager has it."""
    return manager._server_instances.get(session_id)


def session_owner(
    manager: StreamableHTTPSessionManager, session_id: str
) -> AuthorizationContext | None:
    """Who opened session `session_id` (None for an unknown session, or one opened
    without authentication)."""
    return manager._session_owners.get(session_id)


def session_count(manager: StreamableHTTPSessionManager) -> int:
    return len(manager._server_instances)


def register_session(
    manager: StreamableHTTPSessionManager,
    transport: StreamableHTTPServerTransport,
    requestor: AuthorizationContext | None,
) -> None:
    """Track a newly admitted session as the SDK's `_admit_session` does."""
    session_id = transport.mcp_session_id
    if session_id is None:
        raise ValueError("register_session: the transport has no mcp_session_id")
    if requestor is not None:
        manager._session_owners[session_id] = requestor
    manager._server_instances[session_id] = transport


# --- session transport -------------------------------------------------------------


def event_store(transport: StreamableHTTPServerTransport) -> EventStore | None:
    return transport._event_store


def request_streams(transport: StreamableHTTPServerTransport) -> dict[RequestId, Slot]:
    """The transport's request streams by stream key, which its router feeds (the dict
    itself: a resume or a door's call puts its slot there)."""
    return transport._request_streams


def sse_stream_writers(
    transport: StreamableHTTPServerTransport,
) -> dict[RequestId, MemoryObjectSendStream[SSEEvent]]:
    """The SSE writers by stream key, which `close_sse_stream()` closes (the dict itself)."""
    return transport._sse_stream_writers


def event_data(transport: StreamableHTTPServerTransport, message: EventMessage) -> SSEEvent:
    """`message` as the transport frames an SSE event."""
    return transport._create_event_data(message)


def error_response(
    transport: StreamableHTTPServerTransport, reason: str, status: HTTPStatus
) -> Response:
    """A JSON-RPC error without an id, as the transport refuses a request."""
    return transport._create_error_response(reason, status)


def content_type_ok(transport: StreamableHTTPServerTransport, request: Request) -> bool:
    """Whether `request`'s Content-Type is one the transport accepts for a POST."""
    return transport._check_content_type(request)


def retry_interval(transport: StreamableHTTPServerTransport) -> int | None:
    """The SSE `retry` (ms) the transport puts in its priming events, if any."""
    return transport._retry_interval


def write_stream(
    transport: StreamableHTTPServerTransport,
) -> ContextSendStream[SessionMessage] | None:
    """The channel into the transport's router (None before `connect()`)."""
    return transport._write_stream


@contextmanager
def held_open(transport: StreamableHTTPServerTransport) -> Iterator[None]:
    """The session's idle countdown suspended while the block runs, as the transport's
    `handle_request` suspends it for the requests it serves itself."""
    idle = transport.idle_scope
    timeout = transport._idle_timeout
    if idle is None or timeout is None:
        yield
        return
    transport._requests_in_flight += 1
    idle.deadline = math.inf
    try:
        yield
    finally:
        transport._requests_in_flight -= 1
        if not transport._requests_in_flight:
            idle.deadline = anyio.current_time() + timeout


# --- sessions ----------------------------------------------------------------------


def connection_of(session: ServerSession) -> Connection:
    """The connection a session (or a request's session) belongs to: its per-connection
    state and its exit stack, which closes with it."""
    return session._connection


# --- tests only --------------------------------------------------------------------


def sse_ping_interval_site() -> tuple[ModuleType, str]:
    """Where the 2026-era SSE transport keeps its keep-alive interval, for a test to
    shorten it (`monkeypatch.setattr(*sse_ping_interval_site(), 0.1)`)."""
    from mcp.server import _streamable_http_modern  # here: a move breaks that test alone

    return _streamable_http_modern, "_SSE_PING_INTERVAL"


# --- the hooks the gateway overrides -----------------------------------------------


class HookedTransport(StreamableHTTPServerTransport):
    """The SDK's session transport with its private hooks under public names: override
    these (and call `super()` for the SDK's behaviour)."""

    async def _replay_events(self, last_event_id: str, request: Request, send: Send) -> None:
        await self.replay_events(last_event_id, request, send)

    async def replay_events(self, last_event_id: str, request: Request, send: Send) -> None:
        """Answer a GET with `Last-Event-ID`."""
        await super()._replay_events(last_event_id, request, send)

    async def _clean_up_memory_streams(self, request_id: RequestId) -> None:
        await self.clean_up_request_streams(request_id)

    async def clean_up_request_streams(self, request_id: RequestId) -> None:
        """Close and forget a request's slot in `request_streams` once its POST ends."""
        await super()._clean_up_memory_streams(request_id)

    async def _mint_priming_event(
        self, stream_id: StreamId, protocol_version: str
    ) -> SSEEvent | None:
        return await self.priming_event(stream_id, protocol_version)

    async def priming_event(self, stream_id: StreamId, protocol_version: str) -> SSEEvent | None:
        """Store a stream's priming cursor and return it as SSE (None: send none)."""
        return await super()._mint_priming_event(stream_id, protocol_version)


class HookedSessionManager(StreamableHTTPSessionManager):
    """The SDK's session manager with its private hooks under public names."""

    def _admit_session(
        self, requestor: AuthorizationContext | None
    ) -> StreamableHTTPServerTransport | None:
        return self.admit_session(requestor)

    def admit_session(
        self, requestor: AuthorizationContext | None
    ) -> StreamableHTTPServerTransport | None:
        """A new session's transport, registered (`register_session`), or None when the
        manager is full."""
        return super()._admit_session(requestor)

    async def _serve_opening_request(
        self,
        http_transport: StreamableHTTPServerTransport,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        await self.serve_opening_request(http_transport, scope, receive, send)

    async def serve_opening_request(
        self,
        http_transport: StreamableHTTPServerTransport,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """Start a new session and answer the request that opens it (discarding the
        session if that request does not establish it)."""
        await super()._serve_opening_request(http_transport, scope, receive, send)

    async def _discard_session(
        self, session_id: str, transport: StreamableHTTPServerTransport
    ) -> None:
        await self.discard_session(session_id, transport)

    async def discard_session(
        self, session_id: str, transport: StreamableHTTPServerTransport
    ) -> None:
        """Forget an ended session and terminate its transport."""
        await super()._discard_session(session_id, transport)


# --- the start-up check ------------------------------------------------------------

Kind = Literal["method", "coroutine", "attribute", "unused"]


@dataclass(frozen=True)
class Reached:
    """One private name the gateway reaches on an SDK class (or a public name the
    adapter adds, which the SDK must not have: `unused`)."""

    owner: type
    name: str
    kind: Kind
    params: tuple[str, ...] = ()
    """For a method: its parameter names, self included."""
    expected: str = ""
    """For an attribute: what its value on a probe instance must be, in words..."""
    holds: Callable[[Any], bool] | None = None
    """...and as a test of that value."""

    @property
    def label(self) -> str:
        return f"{self.owner.__name__}.{self.name}"

    def problem(self, probes: dict[type, object]) -> str | None:
        """What is wrong with this name in the installed SDK, or None."""
        if self.kind == "unused":
            if hasattr(self.owner, self.name):
                return (
                    f"{self.label}: expected no such name (the gateway's adapter uses it "
                    f"for an SDK hook); found {_kind_of(getattr(self.owner, self.name))}"
                )
            return None
        if self.kind == "attribute":
            return self._attribute_problem(probes)
        wanted = "a coroutine method" if self.kind == "coroutine" else "a method"
        wanted += f" ({', '.join(self.params)})"
        found = inspect.getattr_static(self.owner, self.name, None)
        if found is None:
            return f"{self.label}: expected {wanted}; found no such name"
        if not inspect.isfunction(found):
            return f"{self.label}: expected {wanted}; found {_kind_of(found)}"
        if inspect.iscoroutinefunction(found) != (self.kind == "coroutine"):
            return f"{self.label}: expected {wanted}; found {_kind_of(found)}"
        names = tuple(inspect.signature(found).parameters)
        if names != self.params:
            return f"{self.label}: expected {wanted}; found ({', '.join(names)})"
        return None

    def _attribute_problem(self, probes: dict[type, object]) -> str | None:
        wanted = f"an attribute that is {self.expected}"
        probe = probes.get(self.owner)
        if probe is None:
            return f"{self.label}: expected {wanted}; the probe instance could not be built"
        missing = object()
        value = getattr(probe, self.name, missing)
        if value is missing:
            return f"{self.label}: expected {wanted}; found no such name"
        if self.holds is not None and not self.holds(value):
            return f"{self.label}: expected {wanted}; found {value!r}"
        return None


def _kind_of(value: object) -> str:
    if inspect.iscoroutinefunction(value):
        return "a coroutine method"
    if inspect.isfunction(value):
        return "a method (not a coroutine)"
    return f"a {type(value).__name__}"


class _ProbeStore(EventStore):
    """An event store to recognise on a probe transport; never used to store."""

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        raise RuntimeError("the SDK check's probe store stores nothing")

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        raise RuntimeError("the SDK check's probe store replays nothing")


_PROBE_STORE: Final = _ProbeStore()
_PROBE_RETRY: Final = 4321
_PROBE_IDLE: Final = 987.0
_PROBE_SESSION: Final = "sdk-check"


def _is_dict(value: Any) -> bool:
    return type(value) is dict


T = StreamableHTTPServerTransport
M = StreamableHTTPSessionManager

REQUIRED: Final[tuple[Reached, ...]] = (
    Reached(T, "_replay_events", "coroutine", ("self", "last_event_id", "request", "send")),
    Reached(T, "_clean_up_memory_streams", "coroutine", ("self", "request_id")),
    Reached(T, "_mint_priming_event", "coroutine", ("self", "stream_id", "protocol_version")),
    Reached(T, "_create_event_data", "method", ("self", "event_message")),
    Reached(
        T,
        "_create_error_response",
        "method",
        ("self", "error_message", "status_code", "error_code", "headers"),
    ),
    Reached(
        T,
        "_event_store",
        "attribute",
        expected="the event_store given to __init__",
        holds=lambda value: value is _PROBE_STORE,
    ),
    Reached(T, "_request_streams", "attribute", expected="a dict", holds=_is_dict),
    Reached(T, "_sse_stream_writers", "attribute", expected="a dict", holds=_is_dict),
    Reached(M, "_admit_session", "method", ("self", "requestor")),
    Reached(
        M,
        "_serve_opening_request",
        "coroutine",
        ("self", "http_transport", "scope", "receive", "send"),
    ),
    Reached(M, "_discard_session", "coroutine", ("self", "session_id", "transport")),
    Reached(M, "_server_instances", "attribute", expected="a dict", holds=_is_dict),
    Reached(M, "_session_owners", "attribute", expected="a dict", holds=_is_dict),
    Reached(
        ServerSession,
        "_connection",
        "attribute",
        expected="the connection given to __init__",
        holds=lambda value: isinstance(value, Connection) and value.session_id == _PROBE_SESSION,
    ),
    *(
        Reached(owner, name, "unused")
        for owner, names in (
            (T, ("replay_events", "clean_up_request_streams", "priming_event")),
            (M, ("admit_session", "serve_opening_request", "discard_session")),
        )
        for name in names
    ),
)
"""What every session relies on: a mismatch fails start-up."""

DOOR_ONLY: Final[tuple[Reached, ...]] = (
    Reached(T, "_check_content_type", "method", ("self", "request")),
    Reached(
        T,
        "_retry_interval",
        "attribute",
        expected="the retry_interval given to __init__",
        holds=lambda value: value == _PROBE_RETRY,
    ),
    Reached(
        T,
        "_idle_timeout",
        "attribute",
        expected="the idle_timeout given to __init__",
        holds=lambda value: value == _PROBE_IDLE,
    ),
    Reached(
        T,
        "_requests_in_flight",
        "attribute",
        expected="0 on a new transport",
        holds=lambda value: type(value) is int and value == 0,
    ),
    Reached(
        T,
        "_write_stream",
        "attribute",
        expected="None before connect()",
        holds=lambda value: value is None,
    ),
)
"""What only the handshake-era door (front/session_calls.py) needs: a mismatch turns the
door off, and the SDK serves its calls."""


def _probes() -> dict[type, object]:
    """An instance of each class whose instance attributes are checked, built as the
    gateway builds them; one that cannot be built is left out (its names then fail)."""
    probes: dict[type, object] = {}
    # The probes never send: no outbound channel or request context is needed.
    nothing: Any = None
    builders: dict[type, Callable[[], object]] = {
        T: lambda: T(
            _PROBE_SESSION,
            event_store=_PROBE_STORE,
            retry_interval=_PROBE_RETRY,
            idle_timeout=_PROBE_IDLE,
        ),
        M: lambda: M(app=Server(_PROBE_SESSION)),
        ServerSession: lambda: ServerSession(
            nothing,
            Connection(nothing, protocol_version="2025-11-25", session_id=_PROBE_SESSION),
        ),
    }
    for owner, build in builders.items():
        try:
            probes[owner] = build()
        except Exception:  # reported as each of its attributes' mismatch
            logger.debug("SDK check: cannot build a %s", owner.__name__, exc_info=True)
    return probes


def problems(reached: tuple[Reached, ...]) -> list[str]:
    probes = _probes()
    return [problem for entry in reached if (problem := entry.problem(probes)) is not None]


def shadowed(probes: dict[type, object] | None = None) -> list[str]:
    """The gateway's own private names on its subclasses of the hooked classes that the
    installed SDK class now has too: its methods and class attributes, and the instance
    attributes its methods set (`self._x = ...`), against the SDK class's own and those
    an SDK instance gets in __init__. The SDK's code would use the gateway's, or the
    gateway's code the SDK's state."""
    probes = _probes() if probes is None else probes
    found = []
    for base, sdk_class in ((HookedTransport, T), (HookedSessionManager, M)):
        hooks = set(vars(base))
        sdk_instance = vars(probes[sdk_class]) if sdk_class in probes else {}
        for subclass in _all_subclasses(base):
            for name in (*vars(subclass), *_assigned_on_self(subclass)):
                if name.startswith("__") or not name.startswith("_") or name in hooks:
                    continue
                if hasattr(sdk_class, name):
                    found.append(
                        f"{subclass.__name__}.{name}: expected {sdk_class.__name__} to have "
                        f"no such name; found {_kind_of(getattr(sdk_class, name))}"
                    )
                elif name in sdk_instance:
                    found.append(
                        f"{subclass.__name__}.{name}: expected {sdk_class.__name__} "
                        "instances to have no such attribute; __init__ sets one"
                    )
    return found


def _assigned_on_self(cls: type) -> list[str]:
    """The attributes `cls`'s own methods assign on `self`, read from its source (none
    when the source is not there, as in a frozen build: nothing to compare then)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return []
    names: dict[str, None] = {}
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        while targets:  # `self._a, self._b = ...` and `[*self._c] = ...` too
            target = targets.pop()
            if isinstance(target, ast.Tuple | ast.List):
                targets.extend(target.elts)
            elif isinstance(target, ast.Starred):
                targets.append(target.value)
            elif (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
            ):
                names[target.attr] = None
    return list(names)


def _all_subclasses(cls: type) -> list[type]:
    direct: list[type] = cls.__subclasses__()
    return direct + [deeper for sub in direct for deeper in _all_subclasses(sub)]


def check() -> None:
    """Raise SdkMismatch, naming each, if a name every session relies on is missing or
    has changed in the installed SDK. Call once at start-up (after the gateway's
    subclasses of the hooked classes are defined)."""
    probes = _probes()
    found = [
        problem for entry in REQUIRED if (problem := entry.problem(probes)) is not None
    ] + shadowed(probes)
    if found:
        raise SdkMismatch(found, _installed_version(), PINNED)


def door_problem() -> SdkMismatch | None:
    """Why the handshake-era door cannot run on the installed SDK, or None."""
    found = problems(DOOR_ONLY)
    return SdkMismatch(found, _installed_version(), PINNED) if found else None
