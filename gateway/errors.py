"""The gateway's exception tree: every error it raises on purpose, and every error that
crosses the call service (gateway/calls), is one of these.

    GatewayError
    ├── ConfigError               a configuration that cannot be used (every issue found)
    │   └── CannotStart           valid files, but what the upstreams offer clashes
    ├── SdkMismatch               the installed `mcp` lacks an internal the gateway reaches
    ├── Unauthenticated           no usable credential (/mcp answers 401)
    ├── NothingToApprove          `gateway tools approve` with nothing pending
    ├── SessionError              an agent session (gateway/engine) asked for what it cannot do
    │   ├── UnknownSession        no such session for this caller (or it expired)
    │   ├── SessionNotWaiting     an answer to a session that asked nothing (or not that)
    │   └── InvalidApproval       edited arguments that are no envelope
    ├── StateError                the state store
    │   ├── StateUnavailable      unreachable or too slow: 503 with Retry-After
    │   ├── StateDecodeError      a stored value this gateway cannot read
    │   └── InvalidStreamId       (also a ValueError)
    └── CallError                 a tool call that produced no result
        ├── CallRefused           not sent upstream, and why
        │   ├── PermissionDenied  the tags do not permit it (carries the Decision)
        │   ├── UnknownTool       no upstream offers it (or it is quarantined)
        │   ├── InvalidArguments  the arguments do not fit the tool's inputSchema
        │   ├── MalformedArguments  what JSON cannot carry: invalid params, not a tool error
        │   └── NotRun            a batch stopped before it (execute_many, stop_on_error)
        ├── UpstreamError         sent, or meant to be, and it did not complete
        │   ├── UpstreamUnavailable  not connected or reachable, or its breaker is open:
        │   │                     not sent
        │   ├── CallTimeout       no answer within the upstream's call_timeout
        │   ├── ConnectionLost    the connection closed before an answer: the call may
        │   │                     or may not have taken effect
        │   └── UpstreamRejected  the upstream answered with a JSON-RPC error (code,
        │                         message and data kept, for the caller to see)
        └── InternalFailure       the gateway itself failed on the way (a bug: logged
                                  with its traceback, told to the caller in general words)

Programming errors (TypeError, AssertionError, ...) are not in the tree, so catching
`GatewayError` never hides a bug; the call service logs an unforeseen exception with its
traceback and reports it as an InternalFailure, so that no caller gets a 500 for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .tags.policy import Decision


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One mistake in one configuration file, located as precisely as the input allows."""

    file: str
    message: str
    line: int | None = None
    tag: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [where]
        if self.tag is not None:
            parts.append(f"tag {self.tag!r}")
        if self.field:
            parts.append(self.field)
        return f"{': '.join(parts)}: {self.message}"


class ConfigError(GatewayError):
    """A configuration that cannot be used. Carries every issue found, not just the first."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        if not self.issues:
            raise ValueError("ConfigError needs at least one issue")
        super().__init__(self._summary())

    def _summary(self) -> str:
        count = len(self.issues)
        head = "1 configuration error" if count == 1 else f"{count} configuration errors"
        return head + ":\n" + "\n".join(f"  {issue}" for issue in self.issues)


class CannotStart(ConfigError):
    """gateway.yaml is valid, but what its upstreams offer cannot be served: two of them
    offer the same public tool or prompt name, resource URI or URI template. Said in one
    message, as every start-up refusal is (`gateway serve` and `gateway stdio` exit 3)."""


# --- callers and admins --------------------------------------------------------------------


class Unauthenticated(GatewayError):
    """No usable credential. `reason` is safe to tell the caller; it never says why a key
    does not match."""

    def __init__(self, reason: str, error: str = "invalid_token") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error

    def challenge(self, realm: str = "mcp-gateway") -> str:
        """The WWW-Authenticate header value (RFC 6750)."""
        description = self.reason.replace('"', "'")
        if self.error == "":
            return f'Bearer realm="{realm}"'
        return f'Bearer realm="{realm}", error="{self.error}", error_description="{description}"'


class NothingToApprove(GatewayError):
    pass


# --- agent sessions ------------------------------------------------------------------------


class SessionError(GatewayError):
    pass


class UnknownSession(SessionError):
    """Also what a session of another caller is: whether it exists is not theirs to learn."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"no session {session_id!r} (it may have expired)")
        self.session_id = session_id


class InvalidApproval(SessionError):
    pass


class SessionNotWaiting(SessionError):
    def __init__(self, session_id: str, state: str) -> None:
        super().__init__(f"session {session_id!r} is {state}: it is not waiting for this")
        self.session_id = session_id
        self.state = state


class SessionTaken(SessionError):
    """Another engine (a replica, or this one after a lapsed lease) runs the session now."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} is being run elsewhere")
        self.session_id = session_id


class SessionCanceled(SessionError):
    """Its caller asked for the session to stop after the step under way: it ends canceled."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(f"session {session_id} was cancelled by its caller")


class UnknownFlow(SessionError):
    """No flow of that name is the caller's (whether another's exists is not its to learn)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no flow {name!r} is available to you")
        self.name = name


class InvalidFlowInput(SessionError):
    """A flow's input that does not fit the flow's `inputs` schema."""


# --- the state store -----------------------------------------------------------------------


class ApiError(GatewayError):
    """A request the session API refuses: its HTTP status, a code for programs and a
    detail for people (never a stack trace, never whether another org's session exists)."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        super().__init__(detail)


class StateError(GatewayError):
    """Base of the state store's errors."""


class StateUnavailable(StateError):
    """The backend cannot be reached or did not answer in time. The API answers 503 with
    `Retry-After: retry_after`; MCP listing and calls go on from the configuration files."""

    def __init__(self, url: str, reason: str, retry_after: float = 1.0) -> None:
        super().__init__(f"state store {url} unavailable: {reason}")
        self.url = url
        self.reason = reason
        self.retry_after = retry_after


class StateDecodeError(StateError):
    """A stored value cannot be read by this gateway (unknown encoding version, damage)."""


class InvalidStreamId(StateError, ValueError):
    def __init__(self, event_id: str) -> None:
        super().__init__(f"invalid stream id {event_id!r}: expected '<ms>-<seq>', e.g. '0-0'")


# --- tool calls ----------------------------------------------------------------------------


class CallError(GatewayError):
    """A tool call that produced no result; the message names the tool (and upstream)."""


class CallRefused(CallError):
    """A call that was not sent upstream, and why."""


class PermissionDenied(CallRefused):
    def __init__(self, decision: Decision) -> None:
        super().__init__(f"{decision.tool}: not permitted: {decision.reason}")
        self.decision = decision


class UnknownTool(CallRefused):
    """No upstream offers a tool of that name (or it is quarantined)."""


class InvalidArguments(CallRefused):
    """The arguments do not fit the tool's inputSchema: the tool's error, which a model
    can act on."""


class MalformedArguments(CallRefused):
    """Arguments (or a caller's answers) that JSON cannot carry: invalid params."""


class NotRun(CallRefused):
    """Not attempted: an earlier call of its batch failed (execute_many's stop_on_error)."""


class UpstreamError(CallError):
    """A call could not be made or did not complete; the message names upstream and tool."""


class UpstreamUnavailable(UpstreamError):
    """Not sent: the upstream is not connected, cannot be reached, or its breaker is
    open. The call did not take effect."""


class CallTimeout(UpstreamError):
    """No answer within the upstream's call_timeout (the call is cancelled upstream)."""


class ConnectionLost(UpstreamError):
    """The connection closed before the upstream answered: the call may or may not have
    taken effect upstream."""


class UpstreamRejected(UpstreamError):
    """The upstream answered the request with a JSON-RPC error, passed on as it gave it."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class InternalFailure(CallError):
    """The gateway failed on a call's way (a bug, logged with its traceback). Its message
    says no more than that: the exception's text may hold anything."""


class SdkMismatch(GatewayError):
    """The installed `mcp` SDK lacks a private name the gateway reaches, or has it with
    another shape (gateway/sdk_internals.py checks them at start-up)."""

    def __init__(self, problems: Iterable[str], installed: str, pinned: str) -> None:
        self.problems = tuple(problems)
        head = (
            f"the installed mcp {installed} does not have what the gateway reaches into "
            f"(written against {pinned}; see gateway/sdk_internals.py):"
        )
        super().__init__(head + "".join(f"\n  {problem}" for problem in self.problems))
