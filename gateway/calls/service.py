"""The call service: the one road from any door (the MCP front, the envelope engine, the
session API) to an upstream's tool.

`ToolService.call(caller, call, channel)` takes the caller explicitly (a principal with
what its tags resolved to) and, in this order, sends nothing upstream unless all pass:
0. the arguments can be written as JSON (jsoncodec.unencodable): text that is not valid
   Unicode, a number that is not finite, nesting past jsoncodec.MAX_DEPTH or more than
   its MAX_VALUES values is the caller's malformed input, refused whatever the tool;
1. the Tag Manager's permission-and-scope check with the caller's ResolvedContext, on the
   arguments as the upstream will use them: the defaults the tool's inputSchema declares
   are filled in for the scoped arguments a call leaves out, and sent with it;
2. the catalog: which upstream offers the public name;
3. the arguments against the tool's inputSchema (schemas.py).
Then the call goes to the upstream, and its result comes back as the upstream gave it
(content, structuredContent, isError, _meta), less the upstream's serverInfo stamp: the
caller deals with the gateway. Progress, log messages and questions the upstream sends
during the call go to the call's channel (channel.py). A call is repeated after a lost
connection only when its tool is annotated read-only or idempotent.

Whatever happens, the answer is one typed outcome (outcome.py): Completed, Refused or
Failed, carrying errors of the gateway's tree (errors.py), an upstream's JSON-RPC error
included; only cancellation raises. How an outcome is shown is the door's business (the
MCP front answers a tool the caller may not use exactly as an unknown one). Every call,
cancelled ones too, is told once to the outcome hooks: the audit log is one (audit.py),
metrics and rate limits plug in the same way, so nothing can miss a door.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum

import anyio
import mcp_types as types
from mcp.shared.exceptions import MCPError

from .. import jsoncodec
from ..errors import (
    CallRefused,
    InternalFailure,
    InvalidArguments,
    MalformedArguments,
    NotRun,
    PermissionDenied,
    UnknownTool,
    UpstreamError,
    UpstreamRejected,
)
from ..subscribers import Subscribers
from ..tags.context import ResolvedContext
from ..tags.policy import Decision, Fill, check
from ..upstreams.catalog import CatalogTool
from ..upstreams.defaults import with_defaults
from ..upstreams.pool import Pool
from ..upstreams.relay import unstamped
from ..upstreams.schemas import check_arguments
from ..upstreams.sendable import Unsendable
from .channel import NO_CHANNEL, CallChannel
from .outcome import CallRecord, Completed, Failed, Outcome, Refused, ToolCall

logger = logging.getLogger("gateway.calls")

OutcomeHook = Callable[[CallRecord], None]
"""Told of every call once it ended. Runs in the calling task: keep it quick (the audit
log batches its writes); an exception is logged and the call goes on."""


class Mode(StrEnum):
    SEQUENTIAL = "sequential"
    PARALLEL = "parallel"


class ToolService:
    def __init__(self, pool: Pool, hooks: Iterable[OutcomeHook] = ()) -> None:
        self.pool = pool
        self._hooks = Subscribers[OutcomeHook](hooks)

    def on_outcome(self, hook: OutcomeHook) -> Callable[[], None]:
        """Tell `hook` of every call from now on; returns what stops it (once; again, it
        does nothing)."""
        return self._hooks.add(hook)

    async def call(
        self, caller: ResolvedContext, call: ToolCall, channel: CallChannel = NO_CHANNEL
    ) -> Outcome:
        """Run one call as `caller` (see the module docstring). Cancelling the awaiting
        task cancels the call upstream too, and raises; nothing else does."""
        # One frame for the whole call, the hot path's: `decision` and `upstream` say how
        # far it got, for the handlers at the end.
        started = time.perf_counter()
        decision: Decision | None = None
        upstream: str | None = None
        try:
            arguments = call.arguments if type(call.arguments) is dict else dict(call.arguments)
            malformed = jsoncodec.unencodable(arguments, "arguments")
            error: CallRefused
            if malformed is not None:
                error = MalformedArguments(
                    f"{call.tool}: the arguments cannot be sent: {malformed}"
                )
                return self._refused(caller, call, started, error, "invalid_arguments", malformed)
            entry = self.pool.catalog.tools.get(call.tool)
            checked = check(caller, call.tool, call.arguments, _filler(entry))
            if not checked.allowed:
                error = PermissionDenied(checked)
                return self._refused(
                    caller, call, started, error, checked.outcome.value, checked.reason
                )
            if checked.arguments is not None and checked.arguments is not call.arguments:
                call = ToolCall(call.tool, checked.arguments, call.idempotency_key)  # as checked
            if entry is None:
                reason = "no upstream offers this tool"
                error = UnknownTool(f"{call.tool}: {reason}")
                return self._refused(caller, call, started, error, "unknown_tool", reason)
            decision, upstream = checked, entry.upstream
            problem = await check_arguments(entry.schema_key, call.arguments)
            if problem is not None:
                error = InvalidArguments(
                    f"{call.tool}: arguments do not fit its inputSchema: {problem}"
                )
                return self._refused(caller, call, started, error, "invalid_arguments", problem)
            principal = caller.principal
            failure: UpstreamError
            try:
                result = await self.pool.connections[upstream].call_tool(
                    entry.tool.name,
                    dict(call.arguments),
                    retry=entry.repeatable,
                    on_progress=channel.progress,
                    on_log=channel.relayed_log(),
                    log_level=channel.log_level or "info",
                    asker=channel.asker,
                    input_round=channel.input_round,
                    owner=channel.owner if channel.owner is not None else object(),
                    user=(principal.org_id, principal.user_id),
                    caller=principal,
                    idempotency_key=call.idempotency_key,
                )
            except UpstreamError as exc:
                failure = exc
            except Unsendable as exc:  # the caller's answers of an input round: not sent
                seconds = self._ended(caller, call, decision, upstream, started, "failed", str(exc))
                return Refused(call, MalformedArguments(exc.error.message), seconds)
            except MCPError as exc:  # the upstream's own error answer
                failure = UpstreamRejected(exc.error.code, exc.error.message, exc.error.data)
            else:
                result = unstamped(result)
                if isinstance(result, types.InputRequiredResult):
                    ended = "input_required"
                else:
                    ended = "tool_error" if result.is_error else "ok"
                seconds = self._ended(caller, call, decision, upstream, started, ended)
                return Completed(call, result, seconds, decision)
            said = str(failure) or type(failure).__name__
            seconds = self._ended(caller, call, decision, upstream, started, "failed", said)
            return Failed(call, failure, seconds, decision)
        except anyio.get_cancelled_exc_class():
            # Awaited only in the schema check and the upstream call, both after the
            # permission check and before any record: told here, once.
            if decision is not None:
                self._ended(caller, call, decision, upstream, started, "cancelled")
            raise
        except Exception as exc:  # a bug of ours or the SDK's, before or around the call
            return self._internal(caller, call, started, decision, upstream, exc)

    def refuse(
        self, caller: ResolvedContext, call: ToolCall, decision: str, reason: str
    ) -> Refused:
        """A call a door refuses before asking the call service to make it (the engine's
        integrity rules): told to the hooks and audited as any refusal, never sent."""
        error = NotRun(f"{call.tool}: not run: {reason}")
        return self._refused(caller, call, time.perf_counter(), error, decision, reason)

    def held(self, caller: ResolvedContext, call: ToolCall, reason: str) -> None:
        """A call a door holds for its user's approval before asking the call service to
        make it (the engine's integrity rules): told to the hooks and audited as `held`,
        not sent. Approved, it is made as any call, and audited again."""
        self._tell(CallRecord(caller, call, "held", reason, 0.0))

    def would_permit(self, caller: ResolvedContext, call: ToolCall) -> bool:
        """Whether `call` would pass the permission check `call` makes, telling nobody:
        for a door deciding what to do before it calls (the engine asks for approval
        only of calls the tags permit; `call` checks, and audits, again)."""
        try:
            return self._check(caller, call).allowed
        except Exception:  # a bug: `call` will report it
            logger.exception("permission check of %s failed", call.tool)
            return False

    def permits(self, caller: ResolvedContext, call: ToolCall) -> bool:
        """Whether `call` passes the permission check `call` makes (with the tool's
        declared defaults), for a call going on: a bridged call's retry is checked again,
        so a tag changed meanwhile stops it. A refusal is told to the hooks."""
        started = time.perf_counter()
        try:
            decision = self._check(caller, call)
        except Exception as exc:  # a bug: the call does not go on
            self._internal(caller, call, started, None, None, exc)
            return False
        if decision.allowed:
            return True
        self._refused(
            caller,
            call,
            started,
            PermissionDenied(decision),
            decision.outcome.value,
            decision.reason,
        )
        return False

    def _check(self, caller: ResolvedContext, call: ToolCall) -> Decision:
        """The permission check as `call` makes it, with the tool's declared defaults."""
        entry = self.pool.catalog.tools.get(call.tool)
        return check(caller, call.tool, call.arguments, _filler(entry))

    async def execute_many(
        self,
        caller: ResolvedContext,
        calls: Sequence[ToolCall],
        mode: Mode = Mode.SEQUENTIAL,
        max_concurrency: int = 8,
        stop_on_error: bool = False,
        channel: CallChannel = NO_CHANNEL,
    ) -> list[Outcome]:
        """One outcome per call, in the order of `calls`, whatever happens to the others.
        Sequential calls may stop at the first that is not ok (Completed with isError
        counts as ok: the tool answered); the rest are Refused with NotRun."""
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        outcomes: list[Outcome | None] = [None] * len(calls)
        if mode is Mode.SEQUENTIAL:
            for index, call in enumerate(calls):
                outcome = outcomes[index] = await self.call(caller, call, channel)
                if stop_on_error and not outcome.ok:
                    reason = "not run: an earlier call failed"
                    for later in range(index + 1, len(calls)):
                        skipped = NotRun(f"{calls[later].tool}: {reason}")
                        outcomes[later] = self._refused(
                            caller, calls[later], time.perf_counter(), skipped, "not_run", reason
                        )
                    break
        else:
            limiter = anyio.CapacityLimiter(max_concurrency)

            async def run(index: int, call: ToolCall) -> None:
                async with limiter:
                    outcomes[index] = await self.call(caller, call, channel)

            async with anyio.create_task_group() as tasks:
                for index, call in enumerate(calls):
                    tasks.start_soon(run, index, call)
        done = [outcome for outcome in outcomes if outcome is not None]
        assert len(done) == len(calls), "every call has an outcome"
        return done

    def _refused(
        self,
        caller: ResolvedContext,
        call: ToolCall,
        started: float,
        error: CallRefused,
        decision: str,
        reason: str,
    ) -> Refused:
        seconds = time.perf_counter() - started
        self._tell(CallRecord(caller, call, decision, reason, seconds))
        return Refused(call, error, seconds)

    def _internal(
        self,
        caller: ResolvedContext,
        call: ToolCall,
        started: float,
        decision: Decision | None,
        upstream: str | None,
        exc: Exception,
    ) -> Failed:
        """An unforeseen exception: logged with its traceback, told to the hooks as it
        was, and answered in words that give nothing of the gateway's insides away."""
        logger.exception("tool call %s (upstream %s) failed", call.tool, upstream)
        error = str(exc) or type(exc).__name__
        if decision is not None:
            seconds = self._ended(caller, call, decision, upstream, started, "failed", error)
        else:
            seconds = time.perf_counter() - started
            reason = "not checked: internal error"
            self._tell(CallRecord(caller, call, "internal_error", reason, seconds, None, error))
        where = f" on upstream {upstream}" if upstream is not None else ""
        failure = InternalFailure(f"{call.tool}{where} failed: an internal error (logged)")
        return Failed(call, failure, seconds, decision)

    def _ended(
        self,
        caller: ResolvedContext,
        call: ToolCall,
        decision: Decision,
        upstream: str | None,
        started: float,
        ended: str,
        error: str | None = None,
    ) -> float:
        """Tell the hooks how a call the check let through ended; its seconds."""
        seconds = time.perf_counter() - started
        self._tell(
            CallRecord(
                caller, call, "allowed", decision.reason, seconds, ended, error, decision, upstream
            )
        )
        return seconds

    def _tell(self, record: CallRecord) -> None:
        for hook in self._hooks.current:
            try:
                hook(record)
            except Exception:
                logger.exception("an outcome hook failed on a call of %s", record.call.tool)


def _filler(entry: CatalogTool | None) -> Fill | None:
    """How the permission check fills in `entry`'s declared defaults; None when its
    schema declares none (most tools: a call then costs nothing more)."""
    if entry is None or '"default"' not in entry.schema_key:
        return None
    schema = entry.tool.input_schema
    return lambda paths, arguments: with_defaults(schema, arguments, paths)
