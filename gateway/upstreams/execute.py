"""Executing tool calls: the one road from any door (MCP front, envelope engine, API) to an
upstream.

For every call, in this order, and nothing is sent upstream unless all pass:
0. the arguments can be written as JSON (sendable.py): text that is not valid Unicode or
   a number that is not finite is the caller's malformed input, refused whatever the tool;
1. the Tag Manager's permission-and-scope check with the caller's ResolvedContext, on the
   arguments as the upstream will use them: the defaults the tool's inputSchema declares
   are filled in for the scoped arguments a call leaves out, and sent with it;
2. the catalog: which upstream offers the public name;
3. the arguments against the tool's inputSchema (schemas.py).
Then the call goes to the upstream, and its result comes back exactly as the upstream gave
it (content, structuredContent, isError, _meta), with the time it took. Progress and log
messages the upstream sends during the call go to the caller's callbacks. A call is
repeated after a lost connection only when its tool is annotated read-only or idempotent.

Every decision (allowed, not granted, denied, out of scope, unknown tool, invalid
arguments) and how an allowed call ended is one audit event, with the principal, the
reason and the latency; arguments are recorded as the sha256 of their canonical JSON.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import anyio
import mcp_types as types

from .. import jsoncodec
from ..audit import AuditLog
from ..errors import GatewayError
from ..tags.context import ResolvedContext
from ..tags.policy import Decision, Fill, check
from .calls import InputRound
from .catalog import CatalogTool
from .defaults import with_defaults
from .pool import Pool
from .relay import Asker, LogCallback, ProgressCallback
from .schemas import check_arguments
from .status import UpstreamError


class CallRefused(GatewayError):
    """A call that was not sent upstream, and why."""


class PermissionDenied(CallRefused):
    def __init__(self, decision: Decision) -> None:
        super().__init__(f"{decision.tool}: not permitted: {decision.reason}")
        self.decision = decision


class InvalidArguments(CallRefused):
    pass


class MalformedArguments(CallRefused):
    """Arguments that JSON cannot carry (see sendable.py): invalid params, not a tool's
    error."""


class UnknownTool(CallRefused):
    """No upstream offers a tool of that name (or it is quarantined)."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    tool: str
    """The public (namespaced) name."""
    arguments: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    call: ToolCall
    result: types.CallToolResult | types.InputRequiredResult | None
    """As the upstream gave it; None when the call failed or was refused. An
    InputRequiredResult only when the call passed an `input_round`."""
    error: GatewayError | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.result is not None


class Mode(StrEnum):
    SEQUENTIAL = "sequential"
    PARALLEL = "parallel"


class Executor:
    def __init__(self, pool: Pool, audit: AuditLog | None = None) -> None:
        self.pool = pool
        self.audit = audit or AuditLog()

    async def execute(
        self,
        context: ResolvedContext,
        call: ToolCall,
        *,
        on_progress: ProgressCallback | None = None,
        on_log: LogCallback | None = None,
        log_level: types.LoggingLevel = "info",
        asker: Asker | None = None,
        input_round: InputRound | None = None,
        owner: Hashable | None = None,
    ) -> ToolOutcome:
        """Run one call. Refusals and upstream failures raise (CallRefused, UpstreamError);
        the outcome carries the result and the time it took. Cancelling the awaiting task
        cancels the call upstream too (the SDK sends notifications/cancelled). The upstream's
        progress, logs and requests (sampling, elicitation) go to the callbacks and `asker`
        (see UpstreamConnection.call_tool, also for `input_round`). `owner` is where the
        call's messages go (a client session); calls of different owners never share an
        upstream session that cannot tell them apart. Without one, the call is its own."""
        started = time.perf_counter()
        arguments = call.arguments if type(call.arguments) is dict else dict(call.arguments)
        malformed = jsoncodec.unencodable(arguments, "arguments")
        if malformed is not None:
            self._record(context, call, started, "invalid_arguments", malformed)
            raise MalformedArguments(f"{call.tool}: the arguments cannot be sent: {malformed}")
        entry = self.pool.catalog.tools.get(call.tool)
        decision = self.decide(context, call, started)
        if decision.arguments is not None and decision.arguments is not call.arguments:
            call = ToolCall(call.tool, decision.arguments)  # sent as checked
        if entry is None:
            reason = "no upstream offers this tool"
            self._record(context, call, started, "unknown_tool", reason)
            raise UnknownTool(f"{call.tool}: {reason}")
        problem = await check_arguments(entry.schema_key, call.arguments)
        if problem is not None:
            self._record(context, call, started, "invalid_arguments", problem)
            raise InvalidArguments(f"{call.tool}: arguments do not fit its inputSchema: {problem}")
        connection = self.pool.connections[entry.upstream]
        try:
            result = await connection.call_tool(
                entry.tool.name,
                dict(call.arguments),
                retry=entry.repeatable,
                on_progress=on_progress,
                on_log=on_log,
                log_level=log_level,
                asker=asker,
                input_round=input_round,
                owner=owner if owner is not None else object(),
                user=(context.principal.org_id, context.principal.user_id),
            )
        except UpstreamError as exc:
            self._record(
                context, call, started, "allowed", decision.reason, "failed", str(exc), decision
            )
            raise
        except anyio.get_cancelled_exc_class():
            self._record(
                context, call, started, "allowed", decision.reason, "cancelled", None, decision
            )
            raise
        except Exception as exc:  # the upstream's error answer, or anything unforeseen
            error = str(exc) or type(exc).__name__
            self._record(
                context, call, started, "allowed", decision.reason, "failed", error, decision
            )
            raise
        if isinstance(result, types.InputRequiredResult):
            ended = "input_required"
        else:
            ended = "tool_error" if result.is_error else "ok"
        self._record(context, call, started, "allowed", decision.reason, ended, None, decision)
        return ToolOutcome(call, result, None, time.perf_counter() - started)

    def decide(
        self, context: ResolvedContext, call: ToolCall, started: float | None = None
    ) -> Decision:
        """The permission check of `call` as `execute` makes it (with the tool's declared
        defaults), for a call made now or one going on (a bridged call's retry is checked
        again: a tag changed meanwhile stops it). Raises PermissionDenied, audited."""
        entry = self.pool.catalog.tools.get(call.tool)
        decision = check(context, call.tool, call.arguments, _filler(entry))
        if not decision.allowed:
            began = started if started is not None else time.perf_counter()
            self._record(context, call, began, decision.outcome.value, decision.reason)
            raise PermissionDenied(decision)
        return decision

    def _record(
        self,
        context: ResolvedContext,
        call: ToolCall,
        started: float,
        decision: str,
        reason: str,
        ended: str | None = None,
        error: str | None = None,
        admitted: Decision | None = None,
    ) -> None:
        principal = context.principal
        fields: dict[str, Any] = {
            "user": principal.user_id,
            "org": principal.org_id,
            "tool": call.tool,
            "decision": decision,
            "reason": reason,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "arguments_sha256": arguments_digest(call.arguments),
        }
        if admitted is not None and context.audits_arguments(admitted.admitted_by, call.tool):
            fields["arguments"] = dict(call.arguments)  # the admitting tag asks for them
        if ended is not None:
            fields["ended"] = ended
        if error is not None:
            fields["error"] = error
        self.audit.record("tool_call", **fields)

    async def execute_many(
        self,
        context: ResolvedContext,
        calls: Sequence[ToolCall],
        mode: Mode = Mode.SEQUENTIAL,
        max_concurrency: int = 8,
        stop_on_error: bool = False,
    ) -> list[ToolOutcome]:
        """Outcomes in the order of `calls`, each with its result or its error. Sequential
        calls may stop at the first failure (the rest are reported as not run)."""
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        outcomes: list[ToolOutcome | None] = [None] * len(calls)

        async def run(index: int, call: ToolCall) -> None:
            started = time.perf_counter()
            try:
                outcomes[index] = await self.execute(context, call)
            except GatewayError as exc:
                outcomes[index] = ToolOutcome(call, None, exc, time.perf_counter() - started)

        if mode is Mode.SEQUENTIAL:
            for index, call in enumerate(calls):
                await run(index, call)
                failed = outcomes[index]
                if stop_on_error and failed is not None and not failed.ok:
                    for later in range(index + 1, len(calls)):
                        skipped = CallRefused(
                            f"{calls[later].tool}: not run: an earlier call failed"
                        )
                        outcomes[later] = ToolOutcome(calls[later], None, skipped, 0.0)
                    break
        else:
            limiter = anyio.CapacityLimiter(max_concurrency)

            async def limited(index: int, call: ToolCall) -> None:
                async with limiter:
                    await run(index, call)

            async with anyio.create_task_group() as tasks:
                for index, call in enumerate(calls):
                    tasks.start_soon(limited, index, call)
        return [outcome for outcome in outcomes if outcome is not None]


def arguments_digest(arguments: Mapping[str, Any]) -> str:
    """What the audit log keeps of a call's arguments: enough to match a known value,
    nothing to read one from."""
    text = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _filler(entry: CatalogTool | None) -> Fill | None:
    """How the permission check fills in `entry`'s declared defaults; None when its
    schema declares none (most tools: a call then costs nothing more)."""
    if entry is None or '"default"' not in entry.schema_key:
        return None
    schema = entry.tool.input_schema
    return lambda paths, arguments: with_defaults(schema, arguments, paths)
