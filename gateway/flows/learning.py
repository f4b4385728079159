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
from .records import FlowEnd

logger = logging.getLogger("gateway.flows")

WINDOW: Final = 50
"""Runs of a flow kept, and looked at."""
SHOWN_FLOWS: Final = 20
"""Flows whose statistics one planner turn is shown, at most."""
ERROR_TEXT: Final = 200
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NUMBERS = re.compile(r"\d+")


def run_record(end: FlowEnd, seconds: float, cost_usd: float) -> dict[str, Any]:
    """What is kept of one run."""
    steps = {
        sid: {
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
        """What a planner should know: the steps that failed, and how."""
        lines = []
        for sid, step in self.steps.items():
            if not step.failed:
                continue
            key, _ = step.errors.most_common(1)[0]
            cls, text = key[0], step.examples[key]
            why = f"{text} ({cls})" if cls and cls not in text else text
            lines.append(
                f"step {sid!r} of {self.flow!r} failed {step.failed} of the last "
                f"{step.runs} runs: {why}"
            )
        if self.runs and self.completed < self.runs:
            lines.append(f"{self.flow!r} completed {self.completed} of its last {self.runs} runs")
        return lines


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
        self, caller: ResolvedContext, flow: str, end: FlowEnd, seconds: float, cost: float
    ) -> None:
        """Keep a run of `flow`; a store that fails loses the record, not the session."""
        try:
            await self.store.record_flow_run(
                caller.principal.org_id, flow, run_record(end, seconds, cost), self.window
            )
        except StateError as exc:
            logger.warning("flow %s: its run was not recorded: %s", flow, exc)

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
        return lines

    async def stats(self, org: str, flows: Sequence[str] | None = None) -> list[FlowStats]:
        names = list(flows) if flows else await self.store.flow_names(org)
        return [
            FlowStats.of(name, await self.store.flow_runs(org, name, self.window)) for name in names
        ]

    async def plan_completed(self, caller: ResolvedContext, plan: PlanEnvelope) -> int:
        """Count a generated plan that completed as a candidate flow; its count."""
        shape, candidate = abstracted(plan)
        try:
            return await self.store.count_candidate(caller.principal.org_id, shape, candidate)
        except StateError as exc:
            logger.warning("a completed plan was not kept as a candidate: %s", exc)
            return 0

    async def candidates(self, org: str) -> list[tuple[str, JsonObject, int]]:
        found = await self.store.flow_candidates(org)
        return sorted(found, key=lambda item: (-item[2], item[0]))


def abstracted(plan: PlanEnvelope) -> tuple[str, dict[str, Any]]:
    """A plan's steps with the values the model wrote made inputs of a flow, and the
    outputs it took made templates over the steps: (its shape's id, the candidate). Plans
    of one shape (the same tools, arguments and references, whatever the values) merge."""
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
    return shape, {"goal": plan.goal, "steps": steps, "inputs": inputs}


def _abstract(value: Any, name: str, ids: Mapping[str, str], inputs: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        step = value.get(STEP_REF)
        if isinstance(step, str) and set(value) <= {STEP_REF, "path"} and step in ids:
            return "{{ " + _pointer_expression(ids[step], str(value.get("path", ""))) + " }}"
        return {k: _abstract(v, f"{name}_{k}", ids, inputs) for k, v in sorted(value.items())}
    field_name = re.sub(r"[^A-Za-z0-9_]", "_", name)
    inputs[field_name] = {"type": _json_type(value), "example": value}
    return "{{ input." + field_name + " }}"


def _pointer_expression(step: str, pointer: str) -> str:
    """`steps.<step>...` for a JSON pointer into its result."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
    renamed = {"structuredContent": "structured", "isError": "is_error"}
    expression = f"steps.{step}"
    for index, part in enumerate(parts):
        if index == 0:
            part = renamed.get(part, part)
        if part.isdigit():
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
