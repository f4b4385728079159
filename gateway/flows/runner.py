"""Running a flow: its steps in the order their needs allow (independent ones at once),
each a call through the call service as the session's caller (Actor._call: the same check,
intent and result on the stream as any call of a session), with no model in between.

After every change of a step (started, completed, skipped, failed) the flow's progress is
written to `FLOW:{session}:{flow}`, so a gateway that stops mid-flow resumes it from there:
a step that completed is not run again; one that was under way is looked up in the
session's stream (journal.py): its result, if it came, is taken; if none came it is sent
again, under the same idempotency key, only when the rule of `on_error: retry` allows (its
tool is read-only or idempotent, or the author wrote `retry_unsafe`), else the user is
asked (`Held`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt
from tenacity.wait import wait_exponential

from .. import jsoncodec
from ..engine.acting import Actor, Done
from ..engine.envelopes import Call
from ..engine.journal import Journal
from ..engine.session import Recorder, Session
from ..errors import SessionCanceled, UnknownFlow
from ..state.base import StateStore, parse_id
from ..tags.flows import CompiledFlow, CompiledStep, render
from ..tags.templates import Unrenderable
from .access import flow_of
from .learning import Learning
from .records import FINISHED, FlowEnd, StepRecord, step_view

NOT_RETRIED: Final = frozenset({"refused", "not_resent", "template"})
"""How a step ends that trying again cannot change: the tags refused it, the user said not
to send it again, or its own template failed."""

FLOW_HELD: Final = "flow"
"""What a session's approval is `for` when it holds a flow's steps (not an envelope)."""


@dataclass(slots=True)
class _Run:
    session: Session
    flow: CompiledFlow
    flow_id: str
    inputs: dict[str, Any]
    records: dict[str, StepRecord]
    """Steps finished (and, resumed, the one under way when the run stopped)."""
    keys: str
    """What the idempotency keys of its calls start with, after the session's id."""
    loop_check: bool
    stopping: list[FlowEnd] = field(default_factory=list)
    attempts: dict[str, StepRecord] = field(default_factory=dict)
    """Attempts under way, not yet judged: written down, never read by the next steps."""
    saving: anyio.Lock = field(default_factory=anyio.Lock)

    def views(self) -> dict[str, Any]:
        return {sid: r.view for sid, r in self.records.items() if r.view is not None}


class FlowRunner:
    def __init__(
        self,
        actor: Actor,
        recorder: Recorder,
        repeatable: Callable[[str], bool],
        learning: Learning,
    ) -> None:
        """`repeatable`: whether a tool is annotated read-only or idempotent (the catalog's
        word); `learning`: where runs of flow tags are recorded."""
        self.actor = actor
        self.recorder = recorder
        self.repeatable = repeatable
        self.learning = learning

    @property
    def store(self) -> StateStore:
        return self.recorder.store

    def retry_allowed(self, step: CompiledStep) -> bool:
        return step.spec.retry_unsafe or self.repeatable(step.tool)

    async def run_session(self, session: Session) -> tuple[CompiledFlow | None, FlowEnd]:
        """Run (or go on with) the flow `session` names, as the session's caller today may:
        refused (failed) when the caller has it no more, when it changed since the session
        began it, or when it retries a tool that may not be retried. The run is recorded
        (learning.py) unless it holds a step for the user."""
        assert session.flow is not None
        name = session.flow["name"]
        try:
            flow = flow_of(session.caller, name)
        except UnknownFlow as exc:
            return None, FlowEnd("failed", text=str(exc))
        if flow.digest != session.flow["digest"]:
            why = f"the flow {name!r} changed since this session began it: start it again"
            return flow, FlowEnd("failed", text=why)
        unsafe = flow.unsafe_retries(self.repeatable)
        if unsafe:
            return flow, FlowEnd("failed", text="; ".join(unsafe))
        approved = session.flow.get("approved")
        asked = [s for s in flow.steps if session.caller.needs_approval(s.tool)]
        if asked and approved is None:  # the user's tags ask for a word before these run
            held = [{"step": s.id, "tool": s.tool, "arguments": {}, "key": ""} for s in asked]
            return flow, FlowEnd("held", step=asked[0].id, held=held, asking="approval")
        if asked and approved is False:
            return flow, FlowEnd("failed", text=f"the user did not approve the flow {name!r}")
        settled = None
        deciding = session.deciding
        if deciding is not None and deciding.get("for") == FLOW_HELD:
            if deciding.get("replay") is not None:
                settled = await Journal.read(self.store, session.id, deciding["replay"])
            session.deciding = None
        inputs = session.flow["inputs"]
        end = await self.run(session, flow, name, inputs, settled, f"flow:{name}", record=True)
        session.journal = None
        return flow, end

    async def run(
        self,
        session: Session,
        flow: CompiledFlow,
        flow_id: str,
        inputs: dict[str, Any],
        settled: Journal | None = None,
        keys: str | None = None,
        loop_check: bool = False,
        record: bool = False,
    ) -> FlowEnd:
        """Run (or go on with) `flow` for `session` as `flow_id`, on `inputs` (checked
        against its schema already), until it completes, fails, needs a new plan, or holds
        a call of unknown outcome for the user. `settled`: the journal of the user's word
        on calls held before; `record`: keep the run in `learning` (a flow tag's, not a
        generated plan's), unless it holds a step or had ended before."""
        began, cost = time.monotonic(), session.spent.cost_usd
        end = await self._run(session, flow, flow_id, inputs, settled, keys, loop_check)
        if record and end.status != "held" and not end.replayed:
            seconds, spent = time.monotonic() - began, session.spent.cost_usd - cost
            await self.learning.record_run(session.caller, flow, end, seconds, spent)
        return end

    async def _run(
        self,
        session: Session,
        flow: CompiledFlow,
        flow_id: str,
        inputs: dict[str, Any],
        settled: Journal | None,
        keys: str | None,
        loop_check: bool,
    ) -> FlowEnd:
        stored = await self.store.get_flow_state(session.id, flow_id)
        if stored is not None and stored.get("digest") == flow.digest:
            steps = stored.get("steps") or {}
            records = {sid: StepRecord.load(r) for sid, r in steps.items()}
            ended = stored.get("end")
            if ended is not None:  # it ended before the session's end was written: as it was
                return FlowEnd(**ended, records=records, replayed=True)
            stopped = _stopped(flow, records)
            if stopped is not None:  # a step had stopped it, before its end was written
                stopped.records = records
                return stopped
        else:
            records = {}
            state = {"flow": flow.name, "digest": flow.digest, "status": "running"}
            await self.store.set_flow_state(session.id, flow_id, state)
            await self.recorder.event(
                session,
                "flow",
                flow=flow.name,
                id=flow_id,
                steps=[{"id": s.id, "tool": s.tool, "needs": list(s.needs)} for s in flow.steps],
            )
        run = _Run(session, flow, flow_id, inputs, records, keys or flow_id, loop_check)
        held = await self._replay(run, settled)
        if held is not None:
            held.records = records
            return held
        await self._steps(run)
        if session.stop is not None:  # its caller's: the steps under way ran to their end
            raise SessionCanceled(session.id)
        if run.stopping:
            end = run.stopping[0]
            end.records = records
            return await self._ended(run, end)
        names = {"input": inputs, "steps": run.views()}
        try:
            output = self._output(flow, names, run)
        except Unrenderable as exc:
            why = f"the flow's output could not be made: {exc}"
            return await self._ended(run, FlowEnd("failed", text=why, records=records))
        text = output if isinstance(output, str) else jsoncodec.dumps(output).decode()
        return await self._ended(run, FlowEnd("completed", output, text, records=records))

    async def _ended(self, run: _Run, end: FlowEnd) -> FlowEnd:
        """Write down how the run ended, so that a resume before the session's own end is
        written tells the same, running nothing."""
        ended = {"status": end.status, "output": end.output, "text": end.text, "step": end.step}
        await self._save(run, end.status, end=ended)
        return end

    def _output(self, flow: CompiledFlow, names: Mapping[str, Any], run: _Run) -> Any:
        if flow.definition.output is not None:
            return render(flow.output, names)
        for step in reversed(flow.steps):  # the last step in the flow that completed
            record = run.records.get(step.id)
            if record is not None and record.status == "completed" and record.view is not None:
                return record.view["text"]
        return ""

    async def _replay(self, run: _Run, settled: Journal | None) -> FlowEnd | None:
        """Steps that were under way when the run stopped: their results taken from the
        session's stream; one without a result that is not safe to send again is held."""
        running = {sid: r for sid, r in run.records.items() if r.status == "running"}
        if not running:
            return None
        after = min((r.since for r in running.values()), key=parse_id)
        journal = settled or await Journal.read(self.store, run.session.id, after)
        run.session.journal = journal
        held = []
        for sid, record in running.items():
            step = run.flow.by_id[sid]
            if record.key in journal.results or record.key in journal.settled:
                continue
            if record.key in journal.intents and not self.retry_allowed(step):
                intent = journal.intents[record.key]
                held.append(
                    {
                        "step": sid,
                        "key": record.key,
                        "tool": step.tool,
                        "arguments": intent.get("arguments", {}),
                    }
                )
        if held:
            run.session.journal = None
            return FlowEnd("held", step=held[0]["step"], held=held, after=journal.after)
        return None

    async def _steps(self, run: _Run) -> None:
        """Every step whose needs are met, as soon as they are, `parallel` at once; none
        started once a step stopped the flow (the ones under way run to their end)."""
        flow = run.flow
        pending = [
            s
            for s in flow.steps
            if s.id not in run.records or run.records[s.id].status == "running"
        ]
        if not pending:
            return
        limiter = anyio.CapacityLimiter(run.session.budgets.parallel)
        send, receive = anyio.create_memory_object_stream[str](len(flow.steps))

        def done(need: str) -> bool:  # finished for good, and its dependents may go on
            record = run.records.get(need)
            return (
                record is not None
                and record.status in FINISHED
                and (record.status != "failed" or flow.by_id[need].spec.on_error == "skip")
            )

        # Each step waits for its unmet needs; a step's end is told to its dependents only,
        # so scheduling costs the flow's edges, not its steps squared.
        unmet = {step.id: {need for need in step.needs if not done(need)} for step in pending}
        dependents: dict[str, list[CompiledStep]] = {}
        for step in pending:
            for need in unmet[step.id]:
                dependents.setdefault(need, []).append(step)
        ready = [step for step in pending if not unmet[step.id]]

        raised: list[Exception] = []

        async def one(step: CompiledStep) -> None:
            try:
                async with limiter:
                    if not run.stopping and not raised and run.session.stop is None:
                        await self._step(run, step)
            except Exception as exc:  # a budget, a lost claim, a bug: it ends the run
                raised.append(exc)  # raised below as it is, not in the group's ExceptionGroup
            finally:
                send.send_nowait(step.id)

        with send, receive:  # closed however the group ends (a cancellation, say)
            async with anyio.create_task_group() as tasks:
                running = 0
                while True:
                    if not run.stopping and not raised and run.session.stop is None:
                        for step in ready:
                            running += 1
                            tasks.start_soon(one, step)
                        ready = []
                    if running == 0:
                        break
                    finished = await receive.receive()
                    running -= 1
                    if done(finished):
                        for later in dependents.get(finished, ()):
                            unmet[later.id].discard(finished)
                            if not unmet[later.id]:
                                ready.append(later)
        if raised:  # the steps under way ran to their end; none started after
            raise raised[0]

    async def _step(self, run: _Run, step: CompiledStep) -> None:
        record = run.records.get(step.id)
        names = {"input": run.inputs, "steps": run.views()}
        if record is None and step.when is not None:  # not begun yet: is it to run?
            try:
                go = step.when.truth(names)
            except Unrenderable as exc:
                await self._finish(run, step, StepRecord("failed"), f"when: {exc}", "template")
                return
            if not go:
                record = StepRecord("skipped", attempt=0, view=step_view("skipped"))
                await self._finish(run, step, record)
                return
        try:
            arguments = render(step.args, names)
        except Unrenderable as exc:
            await self._finish(run, step, StepRecord("failed"), str(exc), "template")
            return
        first = record.attempt if record is not None else 1
        attempts = 1
        if step.spec.on_error == "retry" and self.retry_allowed(step):
            policy = step.spec.retry
            attempts = policy.attempts if policy is not None else 3
        tried: list[int] = []

        async def attempt() -> tuple[StepRecord, str, str]:
            number = first + len(tried)
            tried.append(number)
            return await self._attempt(run, step, arguments, number)

        def again(outcome: tuple[StepRecord, str, str]) -> bool:
            record, _, error_class = outcome
            return record.status != "completed" and error_class not in NOT_RETRIED

        policy = step.spec.retry
        retrying = AsyncRetrying(
            stop=stop_after_attempt(max(1, attempts - first + 1)),
            wait=wait_exponential(
                multiplier=policy.backoff if policy else 0.5,
                max=policy.max_backoff if policy else 30.0,
            ),
            retry=retry_if_result(again),
            retry_error_callback=_last_result,
            sleep=anyio.sleep,
            reraise=True,
        )
        outcome: tuple[StepRecord, str, str] = await retrying(attempt)
        record, error, error_class = outcome
        await self._finish(run, step, record, error, error_class)

    async def _attempt(
        self, run: _Run, step: CompiledStep, arguments: dict[str, Any], number: int
    ) -> tuple[StepRecord, str, str]:
        """One attempt of `step`: (its record, why it failed, the failure's class)."""
        session = run.session
        key = f"{session.id}:{run.keys}.{step.id}.{number}"
        record = StepRecord("running", number, key, session.last_event)
        run.attempts[step.id] = record
        await self._save(run, "running", record, step.id)
        await self.recorder.event(
            session, "step", flow=run.flow.name, step=step.id, status="running", attempt=number
        )
        began = time.perf_counter()
        done = await self.actor._call(
            session,
            Call(tool=step.tool, arguments=arguments),
            key,
            step.spec.timeout,
            run.loop_check,
        )
        record.ms = (time.perf_counter() - began) * 1000
        return self._judged(run, step, record, done)

    def _judged(
        self, run: _Run, step: CompiledStep, record: StepRecord, done: Done
    ) -> tuple[StepRecord, str, str]:
        if done.outcome != "completed":
            record.status = "failed"
            record.view = step_view("failed", done.result, done.error)
            return record, done.error, done.outcome
        view = step_view("completed", done.result)
        if step.expect is not None:
            names = {"input": run.inputs, "steps": run.views(), "result": view}
            try:
                met = step.expect.truth(names)
            except Unrenderable as exc:
                record.status, record.view = "failed", step_view("failed", done.result, str(exc))
                return record, f"expect: {exc}", "template"
            if not met:
                why = f"expect {step.expect.source!r} was false for its result"
                record.status, record.view = "failed", step_view("failed", done.result, why)
                return record, why, "expect"
        record.status, record.view = "completed", view
        return record, "", ""

    async def _finish(
        self,
        run: _Run,
        step: CompiledStep,
        record: StepRecord,
        error: str = "",
        error_class: str = "",
    ) -> None:
        """A step's end, written down; a failure stops the flow unless on_error skips it."""
        if record.status == "failed":
            record.error, record.error_class = error, error_class
            if record.view is None:
                record.view = step_view("failed", None, error)
            if step.spec.on_error != "skip":  # before any await: no step starts after it
                why = f"step {step.id!r} ({step.tool}) failed: {error}"
                run.stopping.append(
                    FlowEnd(
                        "replan" if step.spec.on_error == "replan" else "failed",
                        text=why,
                        step=step.id,
                    )
                )
        run.attempts.pop(step.id, None)
        run.records[step.id] = record
        await self.recorder.event(
            run.session,
            "step",
            flow=run.flow.name,
            step=step.id,
            status=record.status,
            attempt=record.attempt,
            **({"error": error[:500], "class": error_class} if record.status == "failed" else {}),
        )
        await self._save(run, "running", record, step.id)

    async def _save(
        self,
        run: _Run,
        status: str,
        record: StepRecord | None = None,
        step: str | None = None,
        end: dict[str, Any] | None = None,
    ) -> None:
        """Write the run's `status`, and one step's `record` or its `end`: a field each,
        so that a step's write costs that step, however long the flow."""
        # The flow and its digest every time: a key lost meanwhile (its TTL, an eviction,
        # a failover) is not rebuilt as a state that no resume would take for this run.
        changes: dict[str, Any] = {"flow": run.flow.name, "digest": run.flow.digest}
        changes["status"] = status
        if record is not None:
            changes[f"steps.{step}"] = record.dump()
        if end is not None:
            changes["end"] = end
        # One write at a time: the status of parallel steps' writes lands in their order.
        async with run.saving:
            await self.store.update_flow_state(run.session.id, run.flow_id, changes)


def _stopped(flow: CompiledFlow, records: Mapping[str, StepRecord]) -> FlowEnd | None:
    """How a run ended that a failed step stopped (its on_error not skip), if one did."""
    for step in flow.steps:
        record = records.get(step.id)
        if record is not None and record.status == "failed" and step.spec.on_error != "skip":
            why = f"step {step.id!r} ({step.tool}) failed: {record.error}"
            if step.spec.on_error == "replan":
                return FlowEnd("replan", text=why, step=step.id)
            return FlowEnd("failed", text=why, step=step.id)
    return None


def held_question(flow: str, end: FlowEnd) -> str:
    """What the user is asked of a flow held: its steps of unknown outcome, or its tools
    that need the user's approval."""
    names = ", ".join(sorted({held["tool"] for held in end.held}))
    if end.asking == "approval":
        return (
            f"The flow {flow!r} runs {names}, which your tags say need your approval, with "
            "arguments made as it runs. Run it (approve), or not (reject)?"
        )
    return (
        f"The gateway stopped while the flow's step {end.step!r} ({names}) ran, so whether "
        "it took effect is unknown, and it is not safe to repeat. Send it again "
        "(approve), or go on without it (reject)?"
    )


def _last_result(state: RetryCallState) -> Any:
    """Once the attempts are spent, the last attempt's outcome is the step's."""
    assert state.outcome is not None
    return state.outcome.result()
