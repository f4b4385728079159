"""What a tool call is, and how it ended: one typed outcome for every call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mcp_types as types

from ..errors import CallRefused, InternalFailure, UpstreamError
from ..tags.context import ResolvedContext
from ..tags.policy import Decision


@dataclass(frozen=True, slots=True)
class ToolCall:
    tool: str
    """The public (namespaced) name."""
    arguments: Mapping[str, Any]
    idempotency_key: str | None = None
    """Sent upstream with the call (IDEMPOTENCY_META): the engine's key for it, the same
    when a resumed session sends the call again."""


@dataclass(frozen=True, slots=True)
class Completed:
    """The upstream answered: its result as it gave it (less its serverInfo stamp), a
    tool error (`isError`) included. An InputRequiredResult only on a channel with an
    input round."""

    call: ToolCall
    """As sent: with the defaults the permission check filled in."""
    result: types.CallToolResult | types.InputRequiredResult
    seconds: float
    decision: Decision
    ok = True


@dataclass(frozen=True, slots=True)
class Refused:
    """Not sent upstream; `error` says why (PermissionDenied carries the Decision)."""

    call: ToolCall
    error: CallRefused
    seconds: float
    ok = False


@dataclass(frozen=True, slots=True)
class Failed:
    """Permitted, and it did not complete: the upstream was unavailable, did not answer in
    time, lost the connection, or answered with a JSON-RPC error (UpstreamRejected); or
    the gateway failed on the way (InternalFailure)."""

    call: ToolCall
    error: UpstreamError | InternalFailure
    seconds: float
    decision: Decision | None
    """None only for an InternalFailure before the check had let the call through."""
    ok = False


Outcome = Completed | Refused | Failed


@dataclass(frozen=True, slots=True)
class CallRecord:
    """What the call service tells its outcome hooks (audit, metrics, rate limits) about
    each call, once, however it ended: also when it was cancelled, which returns no
    outcome."""

    caller: ResolvedContext
    call: ToolCall
    decision: str
    """`allowed`, a refusal of the tags (`not_granted`, `denied`, `out_of_scope`),
    `unknown_tool`, `invalid_arguments`, `not_run` (a batch stopped before it),
    `internal_error` (the gateway failed before the check decided), or a door's own:
    `held` for the user's approval, or refused by the engine (`after_taint`,
    `nested_session`)."""
    reason: str
    seconds: float
    ended: str | None = None
    """How an allowed call ended: ok, tool_error, input_required, failed, cancelled.
    `failed` includes an input round whose answers JSON cannot carry (not sent: the
    outcome is Refused, the record as it always was)."""
    error: str | None = None
    admitted: Decision | None = None
    """The permitting decision of an allowed call."""
    upstream: str | None = None
