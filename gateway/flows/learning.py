"""Learning from flow runs: what every run of a flow did, step by step, kept per org in the
state store (so replicas share it) for the latest WINDOW runs; what the planner is told of
it ("step charge of flow_checkout failed 3 of the last 10 runs: timeout from payments");
and generated plans that completed, kept as candidate flows, merged by shape and counted,
for an admin to review and export as flow tags (`gateway flows`). Nothing becomes a tag
without that.
"""

from __future__ import annotations

import hashlib
import logging
import re
import statistics
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from .. import jsoncodec
from ..engine.envelopes import STEP_REF, PlanEnvelope
from ..errors import StateError
from ..state.base import JsonObject, StateStore
from ..tags.context import ResolvedContext
from ..tags.flows import CompiledFlow
from .records import FlowEnd

logger = logging.getLogger("gateway.flows")

WINDOW: Final = 50
"""Runs of a flow kept, and looked at."""
SHOWN_FLOWS: Final = 10
"""Flows whose statistics one planner turn is shown, at most."""
SHOWN_NOTES: Final = 20
"""Lines of them, at most."""
_FAILURES: Final = {
    "timeout": "no answer in time",
    "failed": "the upstream failed",
    "error": "the tool answered an error",
    "refused": "refused by the user's tags",
    "expect": "its result was not what the flow expects",
    "template": "its arguments could not be made",
    "not_resent": "not sent again after a restart",
}
"""The kinds of failure (the runner's classes) as the planner is told them."""
ERROR_TEXT: Final = 200
GOAL_TEXT: Final = 500
"""Characters of a candidate's goal kept (the model's words, shown to an admin)."""
CANDIDATE_BYTES: Final = 64 * 1024
"""A candidate larger than this (as JSON) is not kept: no flow worth adopting is."""
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NUMBERS = re.compile(r"\d+")


def run_record(flow: CompiledFlow, end: FlowEnd, seconds: float, cost_usd: float) -> dict[str, Any]:
    """What is kept of one run."""
    steps = {
        sid: {
            "tool": flow.by_id[sid].tool if sid in flow.by_id else "",
            "status": record.status,
            "attempts": record.attempt,
            "ms": round(record.ms, 3),
            **(
                {"class": record.error_class, "error": record.error[:ERROR_TEXT]}
                if record.status == "failed"
                else {}
            ),
        }
        for sid, record in end.records.items()
        if record.status != "running"
    }
    return {
        "at": round(time.time(), 3),
        "status": end.status,
        "ms": round(seconds * 1000, 3),
        "cost_usd": round(cost_usd, 6),
        "steps": steps,
    }


@dataclass(slots=True)
class StepStats:
    runs: int = 0
    completed: int = 0
    failed: int = 0
    skipped: int = 0
    retries: int = 0
    latencies: list[float] = field(default_factory=list)
    tool: str = ""
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    """By class and message with its numbers left out: "attempt 3 failed" and "attempt 4
    failed" are one error."""
    examples: dict[tuple[str, str], str] = field(default_factory=dict)
    """Each error's message as its newest run gave it."""

    def failed_with(self, cls: str, text: str) -> None:
        key = (cls, _NUMBERS.sub("N", text))
        self.errors[key] += 1
        self.examples.setdefault(key, text)  # runs come newest first

    def summary(self) -> dict[str, Any]:
        p50, p95 = percentiles(self.latencies)
        return {
            "runs": self.runs,
            "completed": self.completed,
            "failed": self.failed,
            "skipped": self.skipped,
            "retries": self.retries,
            "p50_ms": p50,
            "p95_ms": p95,
            "errors": [
                {"class": key[0], "error": self.examples[key], "count": n}
                for key, n in self.errors.most_common(3)
            ],
        }


@dataclass(slots=True)
class FlowStats:
    flow: str
    runs: int = 0
    completed: int = 0
    latencies: list[float] = field(default_factory=list)
    cost_usd: float = 0.0
    steps: dict[str, StepStats] = field(default_factory=dict)

    @classmethod
    def of(cls, flow: str, runs: Sequence[Mapping[str, Any]]) -> FlowStats:
        stats = cls(flow)
        for run in runs:
            stats.runs += 1
            stats.completed += run.get("status") == "completed"
            stats.latencies.append(float(run.get("ms", 0.0)))
            stats.cost_usd += float(run.get("cost_usd", 0.0))
            for sid, step in (run.get("steps") or {}).items():
                mine = stats.steps.setdefault(sid, StepStats())
                mine.tool = mine.tool or _plain(str(step.get("tool", "")))
                mine.runs += 1
                status = step.get("status")
                mine.completed += status == "completed"
                mine.failed += status == "failed"
                mine.skipped += status == "skipped"
                mine.retries += max(0, int(step.get("attempts", 1)) - 1)
                if status != "skipped":
                    mine.latencies.append(float(step.get("ms", 0.0)))
                if status == "failed":
                    mine.failed_with(str(step.get("class", "")), str(step.get("error", "")))
        return stats

    def summary(self) -> dict[str, Any]:
        p50, p95 = percentiles(self.latencies)
        return {
            "flow": self.flow,
            "runs": self.runs,
            "completed": self.completed,
            "p50_ms": p50,
            "p95_ms": p95,
            "cost_usd": round(self.cost_usd, 6),
            "steps": {sid: step.summary() for sid, step in self.steps.items()},
        }

    def notes(self) -> list[str]:
        """What a planner should know: the steps that failed, how (the kind of failure,
        and whose tool), and how often. Never the error's own words: they are an
        upstream's (or a caller's) text, and these notes are the prompt of every user of
        the flow, where no text but the gateway's may stand (`gateway flows stats` shows
        them to an admin)."""
        lines = []
        for sid, step in self.steps.items():
            if not step.failed:
                continue
            key, _ = step.errors.most_common(1)[0]
            source = f" from {step.tool}" if step.tool else ""
            lines.append(
                f"step {sid!r} of {self.flow!r} failed {step.failed} of the last "
                f"{step.runs} runs: {_FAILURES.get(key[0], 'it failed')}{source}"
            )
        if self.runs and self.completed < self.runs:
            lines.append(f"{self.flow!r} completed {self.completed} of its last {self.runs} runs")
        return lines


def _plain(text: str) -> str:
    """A tool name as kept: only what a tool name may hold (a record is data from the
    store, written by this module, but a note must hold nothing else)."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "", text)[:256]


def percentiles(values: Sequence[float]) -> tuple[float | None, float | None]:
    """The median and the 95th percentile, None without values."""
    if not values:
        return None, None
    if len(values) == 1:
        return values[0], values[0]
    cuts = statistics.quantiles(values, n=20, method="inclusive")
    return round(statistics.median(values), 3), round(cuts[18], 3)


class Learning:
    def __init__(self, store: StateStore, window: int = WINDOW) -> None:
        self.store = store
        self.window = window

    async def record_run(
        self, caller: ResolvedContext, flow: CompiledFlow, end: FlowEnd, seconds: float, cost: float
    ) -> None:
        """Keep a run of `flow`; a store that fails loses the record, not the session."""
        try:
            await self.store.record_flow_run(
                caller.principal.org_id,
                flow.name,
                run_record(flow, end, seconds, cost),
                self.window,
            )
        except StateError as exc:
            logger.warning("flow %s: its run was not recorded: %s", flow.name, exc)

    async def notes(self, caller: ResolvedContext) -> list[str]:
        """What recent runs of the caller's flows say, for the planner's prompt."""
        lines: list[str] = []
        org = caller.principal.org_id
        for info in caller.flows[:SHOWN_FLOWS]:
            try:
                runs = await self.store.flow_runs(org, info.tag, self.window)
            except StateError:
                return lines
            lines += FlowStats.of(info.tag, runs).notes()
            if len(lines) >= SHOWN_NOTES:
                return lines[:SHOWN_NOTES]
        return lines

    async def stats(self, org: str, flows: Sequence[str] | None = None) -> list[FlowStats]:
        names = list(flows) if flows else await self.store.flow_names(org)
        return [
            FlowStats.of(name, await self.store.flow_runs(org, name, self.window)) for name in names
        ]

    async def plan_completed(self, caller: ResolvedContext, plan: PlanEnvelope) -> int:
        """Count a generated plan that completed as a candidate flow; its count."""
        try:
            shape, candidate = abstracted(plan)
        except NotAFlow:
            return 0
        if len(jsoncodec.dumps(candidate)) > CANDIDATE_BYTES:
            return 0
        try:
            return await self.store.count_candidate(caller.principal.org_id, shape, candidate)
        except StateError as exc:
            logger.warning("a completed plan was not kept as a candidate: %s", exc)
            return 0

    async def candidates(self, org: str) -> list[tuple[str, JsonObject, int]]:
        found = await self.store.flow_candidates(org)
        return sorted(found, key=lambda item: (-item[2], item[0]))


class NotAFlow(ValueError):
    """A plan that no flow could be made of (a reference no template can say)."""


def abstracted(plan: PlanEnvelope) -> tuple[str, dict[str, Any]]:
    """A plan's steps with the values the model wrote made inputs of a flow (by type: the
    values themselves are not kept, they may be anyone's data), and the outputs it took
    made templates over the steps: (its shape's id, the candidate). Plans of one shape
    (the same tools, arguments and references, whatever the values) merge. NotAFlow when a
    reference cannot be a template."""
    ids = {step.id: f"s{index + 1}" for index, step in enumerate(plan.steps)}
    inputs: dict[str, Any] = {}
    steps = []
    for index, step in enumerate(plan.steps):
        sid = ids[step.id]
        args = {
            name: _abstract(value, f"{sid}_{name}", ids, inputs)
            for name, value in sorted(step.arguments.items())
        }
        entry: dict[str, Any] = {"id": sid, "tool": step.tool, "args": args}
        if step.after is not None:
            entry["after"] = [ids[after] for after in step.after]
        elif index > 0:
            entry["after"] = [ids[plan.steps[index - 1].id]]
        steps.append(entry)
    shape_data = [[s["tool"], s["args"], s.get("after", [])] for s in steps]
    shape = hashlib.sha256(jsoncodec.dumps(shape_data, sort_keys=True)).hexdigest()[:16]
    return shape, {"goal": plan.goal[:GOAL_TEXT], "steps": steps, "inputs": inputs}


def _abstract(value: Any, name: str, ids: Mapping[str, str], inputs: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        step = value.get(STEP_REF)
        if isinstance(step, str) and set(value) <= {STEP_REF, "path"} and step in ids:
            return "{{ " + _pointer_expression(ids[step], value.get("path", "")) + " }}"
        return {k: _abstract(v, f"{name}_{k}", ids, inputs) for k, v in sorted(value.items())}
    if isinstance(value, list) and _has_reference(value):
        return [_abstract(v, f"{name}_{i}", ids, inputs) for i, v in enumerate(value)]
    field_name = re.sub(r"[^A-Za-z0-9_]", "_", name)[:64]
    unique, n = field_name, 1
    while unique in inputs:  # `a.b` and `a_b` are two inputs
        n += 1
        unique = f"{field_name}_{n}"
    inputs[unique] = {"type": _json_type(value)}
    return "{{ input." + unique + " }}"


def _has_reference(value: Any) -> bool:
    if isinstance(value, dict):
        return STEP_REF in value or any(_has_reference(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_reference(v) for v in value)
    return False


_RESULT_PARTS: Final = {
    "structuredContent": "structured",
    "content": "content",
    "isError": "is_error",
}


def _pointer_expression(step: str, pointer: Any) -> str:
    """`steps.<step>...` for a JSON pointer into its result; NotAFlow for one that does not
    start in what a step's template may read (its structured content or content)."""
    if not isinstance(pointer, str) or not pointer.startswith("/"):
        raise NotAFlow(f"a reference to all of step {step}'s result")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
    if parts[0] not in _RESULT_PARTS:
        raise NotAFlow(f"a reference to {parts[0]!r} of a result")
    expression = f"steps.{step}.{_RESULT_PARTS[parts[0]]}"
    for part in parts[1:]:
        if part.isascii() and part.isdigit():
            expression += f"[{part}]"
        elif _IDENTIFIER.match(part):
            expression += f".{part}"
        else:
            expression += f"[{jsoncodec.dumps(part).decode()}]"
    return expression


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    return "object"
