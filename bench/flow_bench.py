"""Flow benchmark: what the flow runner costs per step, and what a 1,000-step flow costs.

Flow sessions run with no planner at all (`Engine.start(caller, "", flow=<tag>, inputs=...)`
then `engine.run`), as a caller whose tags grant `gateway__ping` and trust its output (so
no session is ever tainted), each step a call of the gateway's own tool, an in-process
upstream of the pool (`own_upstream()`: the SDK client over memory streams, no child
process). The engine is built as the runtime builds it (`Engine(ToolService(pool), store,
lambda context: build_view(context, pool.catalog).tools, None, lease=15.0)`), without the
audit log's hook. It starts a private `redis-server` (from PATH, on a free loopback port,
nothing persisted; never the shared one on 6379) and measures, per round, on a
`memory://` store and on that Redis (`open_store` with its defaults):

- CPU per flow step: flow sessions one after another, each checked (completed, every step
  called, allowed and ok), in alternating blocks of three kinds: a 1-step flow, a flow of
  `steps` chained steps (each step's `message` is `{{ steps.<previous>.structured.message }}`,
  so each waits for the one before and passes its value on; the first reads
  `{{ input.x }}`), and one of `steps` independent steps (each reads only `{{ input.x }}`,
  so they may run at once, up to the session's `parallel`). The process's CPU time
  (`time.process_time_ns`) per session of each kind, and per flow step: the difference
  from the 1-step flow's per extra step; for Redis also redis-server's own CPU (its
  per-process clock), which the process's time does not hold; wall time per session;
- a `big`-step flow (1,000: the most the format allows) of chained steps, once untraced:
  its wall time, CPU per step over the session and, from a stamp taken as each step's call
  begins, CPU per step over its first and its last tenth (the runner writes the whole
  FLOW state after every change of a step, so a step's cost may grow with the steps
  before it); and once more on the same store with tracemalloc on: the peak of the
  process's Python memory during the session, what it keeps after it (after
  `gc.collect()`), and for Redis the server's `used_memory` after less before.

Every measurement is repeated for `--rounds` rounds; the figures reported are the medians
over the rounds, with the spread (lowest and highest round). Targets are checked on the
medians, and the process exits with status 1 when one is missed. This is not a test: the
test suite never asserts on time.

Run it with `bench/run flow` (or `.venv/bin/python -m bench.flow_bench`).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import itertools
import json
import logging
import math
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, Final

import anyio
import mcp_types as types
import yaml

from bench.engine_bench import (
    Logged,
    _cell,
    _machine,
    _redis_server_version,
    _terminate_on_sigterm,
    private_redis,
    ready_store,
    redis_flush,
    redis_used_memory,
    server_cpu_ns,
    shown,
)
from bench.measure import NS_PER_MS, NS_PER_S, NS_PER_US, Metric
from gateway.calls import ToolService
from gateway.calls.channel import NO_CHANNEL, CallChannel
from gateway.calls.outcome import Outcome, ToolCall
from gateway.engine.loop import Engine, SessionResult
from gateway.engine.states import SessionState
from gateway.front.views import build_view
from gateway.own_tools import own_upstream
from gateway.principal import Principal
from gateway.state import codec
from gateway.state.base import StateStore
from gateway.tags.context import ResolvedContext
from gateway.tags.loader import tagset_from_texts
from gateway.tags.resolve import resolve
from gateway.upstreams.pool import Pool
from tests.redis_server import RedisServer

# --------------------------------------------------------------------------------------
# Sizes and targets


@dataclass(frozen=True, slots=True)
class Sizes:
    sessions: int
    """Timed sessions of each kind per backend and round, one after another."""
    block: int
    """Sessions per block; the kinds' blocks alternate."""
    warmup: int
    """Untimed sessions of each kind first, per backend and round."""
    steps: int
    """Steps of the chained and of the independent flow."""
    big: int
    """Steps of the big flow (the format allows up to 1,000)."""

    @property
    def window(self) -> int:
        """Steps of the big flow's first and last part, whose CPU per step is compared."""
        return max(1, self.big // 10)


FULL = Sizes(sessions=200, block=50, warmup=20, steps=10, big=1_000)
QUICK = Sizes(sessions=40, block=20, warmup=5, steps=10, big=200)

BACKENDS: Final = ("memory", "redis")
KINDS: Final = ("one", "chain", "wide")
TOOL: Final = "gateway__ping"
INPUTS: Final = {"x": "order 1234"}
FLOWS: Final = {"one": "flow_one", "chain": "flow_chain", "wide": "flow_wide", "big": "flow_big"}

READY_TIMEOUT: Final = 5.0
POOL_TIMEOUT: Final = 20.0
PHASE_TIMEOUT: Final = 120.0
"""For a block of sessions run one after another (a warm-up, a timed block): one deadline
per block, so that the timed sessions carry no cancel scope of ours."""
BIG_TIMEOUT: Final = 900.0
"""For one big flow session (under tracemalloc it runs several times slower)."""
ROUND_TIMEOUT: Final = 3_600.0


def metrics(sizes: Sizes) -> tuple[Metric, ...]:
    n, big, window = sizes.steps, sizes.big, sizes.window
    last = f"{big - window + 1:,}-{big:,}"
    return (
        Metric("one_cpu_us", "CPU per session, 1-step flow", NS_PER_US, "us"),
        Metric("chain_cpu_us", f"CPU per session, {n} chained steps", NS_PER_US, "us"),
        Metric("wide_cpu_us", f"CPU per session, {n} independent steps", NS_PER_US, "us"),
        Metric("step_cpu_us", "CPU per flow step, chained", NS_PER_US, "us"),
        Metric("wide_step_cpu_us", "CPU per flow step, independent", NS_PER_US, "us"),
        Metric("step_server_us", "redis-server CPU per flow step, chained", NS_PER_US, "us"),
        Metric(
            "wide_step_server_us", "redis-server CPU per flow step, independent", NS_PER_US, "us"
        ),
        Metric("one_wall_ms", "wall time per session, 1-step flow", NS_PER_MS, "ms"),
        Metric("chain_wall_ms", f"wall time per session, {n} chained steps", NS_PER_MS, "ms"),
        Metric("wide_wall_ms", f"wall time per session, {n} independent steps", NS_PER_MS, "ms"),
        Metric("big_completed", f"{big:,}-step flow: steps completed", 1, "steps"),
        Metric("big_wall_s", f"{big:,}-step flow: wall time", NS_PER_S, "s"),
        Metric("big_cpu_us", f"{big:,}-step flow: CPU per step, whole session", NS_PER_US, "us"),
        Metric(
            "big_first_us", f"{big:,}-step flow: CPU per step, steps 1-{window}", NS_PER_US, "us"
        ),
        Metric("big_last_us", f"{big:,}-step flow: CPU per step, steps {last}", NS_PER_US, "us"),
        Metric("big_server_us", f"{big:,}-step flow: redis-server CPU per step", NS_PER_US, "us"),
        Metric("big_state_kb", f"{big:,}-step flow: FLOW state at the end, JSON", 1_000, "KB"),
        Metric("big_peak_mb", f"{big:,}-step flow: tracemalloc peak", 1_000_000, "MB"),
        Metric("big_retained_mb", f"{big:,}-step flow: Python memory kept after", 1_000_000, "MB"),
        Metric(
            "big_server_mb", f"{big:,}-step flow: redis-server used_memory kept", 1_000_000, "MB"
        ),
    )


@dataclass(frozen=True, slots=True)
class Target:
    backend: str
    key: str
    limit: float
    """In the metric's reported unit."""
    exact: bool = False
    """The median must equal `limit` (a count), else be under `limit`."""

    def met(self, value: float) -> bool:
        return value == self.limit if self.exact else value < self.limit

    def text(self, unit: str) -> str:
        return f"{'=' if self.exact else '<'} {shown(self.limit)} {unit}"


def targets(sizes: Sizes) -> tuple[Target, ...]:
    return (
        Target("memory", "step_cpu_us", 1_000.0),
        *(Target(backend, "big_completed", sizes.big, exact=True) for backend in BACKENDS),
    )


# --------------------------------------------------------------------------------------
# The flows


def flow_tag(name: str, steps: int, chained: bool) -> dict[str, Any]:
    """A flow tag of `steps` pings: each reads the one before (chained), or only the input."""

    def message(index: int) -> str:
        if chained and index > 0:
            return f"{{{{ steps.s{index - 1}.structured.message }}}}"
        return "{{ input.x }}"

    return {
        "tag": name,
        "kind": "flow",
        "payload": {
            "config": {"assigned_roles": ["agent"]},
            "content": {
                "description": f"{steps} pings, {'chained' if chained else 'independent'}",
                "inputs": {
                    "type": "object",
                    "properties": {"x": {"type": "string"}},
                    "required": ["x"],
                },
                "steps": [
                    {"id": f"s{index}", "tool": TOOL, "args": {"message": message(index)}}
                    for index in range(steps)
                ],
            },
        },
    }


def tags_yaml(sizes: Sizes) -> str:
    role = {
        "tag": "support",
        "kind": "role",
        "payload": {
            "config": {
                "assigned_roles": ["agent"],
                "allowed_tools": [TOOL],
                "trusted_output": [TOOL],
            },
            "content": "You help customers with their orders.",
        },
    }
    flows = [
        flow_tag(FLOWS["one"], 1, chained=True),
        flow_tag(FLOWS["chain"], sizes.steps, chained=True),
        flow_tag(FLOWS["wide"], sizes.steps, chained=False),
        flow_tag(FLOWS["big"], sizes.big, chained=True),
    ]
    document = {"users": {"alice": {"roles": ["agent"]}}, "tags": [role, *flows]}
    return yaml.safe_dump(document, sort_keys=False)


def steps_of(kind: str, sizes: Sizes) -> int:
    return {"one": 1, "chain": sizes.steps, "wide": sizes.steps, "big": sizes.big}[kind]


# --------------------------------------------------------------------------------------
# Sessions


class StampedService(ToolService):
    """The call service, taking the process's (and redis-server's) CPU clock and the wall
    clock as each call begins, while `stamps` is a list: for a chained flow, the time
    between two stamps is one whole step (its call, its end written down, the next one's
    start)."""

    def __init__(self, pool: Pool) -> None:
        super().__init__(pool)
        self.stamps: list[tuple[int, int, int | None]] | None = None
        self.server_pid: int | None = None

    async def call(
        self, caller: ResolvedContext, call: ToolCall, channel: CallChannel = NO_CHANNEL
    ) -> Outcome:
        if self.stamps is not None:
            self.stamps.append(
                (time.process_time_ns(), time.perf_counter_ns(), server_cpu_ns(self.server_pid))
            )
        return await super().call(caller, call, channel)


@dataclass(slots=True)
class Rig:
    """What every engine of a round shares: the pool with the own tools, the call
    service, the caller."""

    pool: Pool
    service: StampedService
    caller: ResolvedContext
    sizes: Sizes

    def tools_for(self, context: ResolvedContext) -> Sequence[types.Tool]:
        return build_view(context, self.pool.catalog).tools

    def engine(self, store: StateStore) -> Engine:
        return Engine(self.service, store, self.tools_for, None, lease=15.0)


def problem(result: SessionResult, steps: int) -> str | None:
    """Why a flow session did not end with every step called, allowed and ok, or None."""
    if result.state is not SessionState.COMPLETED:
        return f"{result.state.value}: {result.text}"
    if len(result.calls) != steps or not all(
        c.ok and c.decision == "allowed" for c in result.calls
    ):
        wrong = [c for c in result.calls if not (c.ok and c.decision == "allowed")][:3]
        return f"{len(result.calls)} calls, expected {steps} allowed and ok (e.g. {wrong})"
    if result.text != f"pong: {INPUTS['x']}":
        return f"output {result.text!r}"
    return None


async def session(engine: Engine, rig: Rig, kind: str) -> SessionResult:
    """One flow session of `kind`, from start to its end; RuntimeError unless it completed
    with every step. Its caller bounds its time (PHASE_TIMEOUT)."""
    started = await engine.start(rig.caller, "", flow=FLOWS[kind], inputs=INPUTS)
    result = await engine.run(started)
    wrong = problem(result, steps_of(kind, rig.sizes))
    if wrong is not None:
        raise RuntimeError(f"session {result.session_id} ({kind}): {wrong}")
    return result


# --------------------------------------------------------------------------------------
# Measuring


async def measure_sequential(rig: Rig, engine: Engine, server_pid: int | None) -> dict[str, float]:
    """CPU and wall time per session and per flow step, kind by kind, in alternating
    blocks of sessions run one after another."""
    sizes = rig.sizes
    cpu = dict.fromkeys(KINDS, 0)
    wall = dict.fromkeys(KINDS, 0)
    server = dict.fromkeys(KINDS, 0)
    done = dict.fromkeys(KINDS, 0)
    blocks = max(1, sizes.sessions // sizes.block)
    for index in range(blocks):
        shift = index % len(KINDS)  # each kind in each place of the order, in turn
        for kind in KINDS[shift:] + KINDS[:shift]:
            gc.collect()
            server_start = server_cpu_ns(server_pid)
            with anyio.fail_after(PHASE_TIMEOUT):
                cpu_start, wall_start = time.process_time_ns(), time.perf_counter_ns()
                for _ in range(sizes.block):
                    await session(engine, rig, kind)
            wall[kind] += time.perf_counter_ns() - wall_start
            cpu[kind] += time.process_time_ns() - cpu_start
            server_end = server_cpu_ns(server_pid)
            if server_start is not None and server_end is not None:
                server[kind] += server_end - server_start
            done[kind] += sizes.block
    result: dict[str, float] = {}
    for kind in KINDS:
        result[f"{kind}_cpu_us"] = cpu[kind] / done[kind]
        result[f"{kind}_wall_ms"] = wall[kind] / done[kind]
    extra = sizes.steps - 1  # a flow step costs the difference from the 1-step flow, per step
    one, one_server = cpu["one"] / done["one"], server["one"] / done["one"]
    for kind, prefix in (("chain", "step"), ("wide", "wide_step")):
        result[f"{prefix}_cpu_us"] = (cpu[kind] / done[kind] - one) / extra
        result[f"{prefix}_server_us"] = (
            (server[kind] / done[kind] - one_server) / extra if server_pid else math.nan
        )
    return result


@dataclass(slots=True)
class BigRun:
    completed: int = 0
    """Steps completed in a session that completed (0 when the session did not)."""
    problem: str | None = None
    wall_ns: int = 0
    cpu_ns: int = 0
    server_ns: int | None = None
    stamps: list[tuple[int, int, int | None]] = field(default_factory=list)
    state_bytes: int = 0
    events: int = 0


async def big_session(rig: Rig, engine: Engine, store: StateStore, stamped: bool) -> BigRun:
    """One big flow session, bounded by BIG_TIMEOUT; what it did. It does not raise for a
    session that did not complete: that is a figure (steps completed) with a target."""
    run = BigRun()
    server_pid = rig.service.server_pid
    rig.service.stamps = run.stamps if stamped else None
    gc.collect()
    result: SessionResult | None = None
    server_start = server_cpu_ns(server_pid)
    cpu_start, wall_start = time.process_time_ns(), time.perf_counter_ns()
    try:
        with anyio.move_on_after(BIG_TIMEOUT) as scope:
            started = await engine.start(rig.caller, "", flow=FLOWS["big"], inputs=INPUTS)
            result = await engine.run(started)
    finally:
        rig.service.stamps = None
    run.cpu_ns = time.process_time_ns() - cpu_start
    run.wall_ns = time.perf_counter_ns() - wall_start
    server_end = server_cpu_ns(server_pid)
    if server_start is not None and server_end is not None:
        run.server_ns = server_end - server_start
    if result is None:
        run.problem = f"not finished within {BIG_TIMEOUT:g} s" if scope.cancelled_caught else "?"
        return run
    state = await store.get_flow_state(result.session_id, FLOWS["big"])
    if state is not None:
        run.state_bytes = len(codec.encode(state))
        steps = state.get("steps", {})
        done = sum(1 for record in steps.values() if record.get("status") == "completed")
    else:
        done = 0
    run.problem = problem(result, rig.sizes.big)
    run.completed = done if result.state is SessionState.COMPLETED else 0
    return run


def per_step(stamps: Sequence[tuple[int, int, int | None]], first: int, last: int) -> float:
    """CPU per step from the stamp of step `first` to that of step `last` (0-based)."""
    return (stamps[last][0] - stamps[first][0]) / (last - first)


async def measure_big(
    rig: Rig, backend: str, url: str, server_pid: int | None
) -> tuple[dict[str, float], dict[str, Any]]:
    """The big flow on a fresh store: once with stamps (time), once under tracemalloc
    (memory)."""
    sizes = rig.sizes
    redis = backend == "redis"
    big = sizes.big
    window = sizes.window
    async with ready_store(url) as store:
        engine = rig.engine(store)
        with anyio.fail_after(PHASE_TIMEOUT):  # the new store's connections made
            await session(engine, rig, "one")
        timed = await big_session(rig, engine, store, stamped=True)
        figures: dict[str, float] = {
            "big_wall_s": timed.wall_ns,
            "big_cpu_us": timed.cpu_ns / big,
            "big_server_us": timed.server_ns / big
            if timed.server_ns is not None and redis
            else math.nan,
            "big_state_kb": timed.state_bytes,
            "big_first_us": math.nan,
            "big_last_us": math.nan,
        }
        stamps = timed.stamps
        if len(stamps) == big and big > window:
            figures["big_first_us"] = per_step(stamps, 0, window)
            figures["big_last_us"] = per_step(stamps, big - 1 - window, big - 1)
        # Where the CPU per step goes over the flow, by tenths (for the README's words).
        tenths = []
        if len(stamps) == big and big >= 20:
            edges = [round(big * part / 10) for part in range(10)] + [big - 1]
            tenths = [per_step(stamps, a, b) / NS_PER_US for a, b in itertools.pairwise(edges)]

        gc.collect()
        used_before = await redis_used_memory(url) if redis else 0
        tracemalloc.start(1)
        try:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            traced = await big_session(rig, engine, store, stamped=False)
            peak = tracemalloc.get_traced_memory()[1]
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        used_after = await redis_used_memory(url) if redis else 0
    completed = min(timed.completed, traced.completed)
    figures.update(
        big_completed=completed,
        big_peak_mb=peak - before,
        big_retained_mb=after - before,
        big_server_mb=used_after - used_before if redis else math.nan,
    )
    details = {
        "problems": [p for p in (timed.problem, traced.problem) if p is not None],
        "tenths_us": [round(value, 1) for value in tenths],
        "traced_wall_s": round(traced.wall_ns / NS_PER_S, 2),
    }
    return figures, details


async def run_backend(
    backend: str, rig: Rig, server: RedisServer
) -> tuple[dict[str, float], dict[str, Any]]:
    """One round of every measurement on `backend`: raw figures by metric key, and
    details (what went wrong, the big flow's CPU per step by tenths)."""
    redis = backend == "redis"
    url = server.url if redis else "memory://"
    pid = server.process.pid if redis and server.process is not None else None
    rig.service.server_pid = pid
    result: dict[str, float] = {}
    try:
        async with ready_store(url) as store:
            engine = rig.engine(store)
            for kind in KINDS:  # warm-up: caches filled, the store's connections made
                with anyio.fail_after(PHASE_TIMEOUT):
                    for _ in range(rig.sizes.warmup):
                        await session(engine, rig, kind)
            result.update(await measure_sequential(rig, engine, pid))
        if redis:
            await redis_flush(url)
        big, details = await measure_big(rig, backend, url, pid)
        result.update(big)
    finally:
        rig.service.server_pid = None
        if redis:  # the server lives for the whole run: leave it as each round found it
            with anyio.move_on_after(10, shield=True):
                try:
                    await redis_flush(url)
                except Exception as exc:  # best effort: not to hide what brought us here
                    print(f"flow_bench: could not empty the private redis: {exc}", flush=True)
    return result, details


Round = dict[str, tuple[dict[str, float], dict[str, Any]]]


async def run_round(sizes: Sizes, caller: ResolvedContext, server: RedisServer) -> Round:
    logged = Logged()
    gateway_logger = logging.getLogger("gateway")
    gateway_logger.addHandler(logged)
    try:
        with anyio.fail_after(ROUND_TIMEOUT):
            pool = Pool({}, own=own_upstream())
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(pool.run)
                with anyio.fail_after(POOL_TIMEOUT):
                    await pool.settled()
                rig = Rig(pool, StampedService(pool), caller, sizes)
                listed = [tool.name for tool in rig.tools_for(caller)]
                if TOOL not in listed:
                    raise RuntimeError(f"the caller is shown {listed}, without {TOOL!r}")
                figures = {backend: await run_backend(backend, rig, server) for backend in BACKENDS}
                tasks.cancel_scope.cancel()
    finally:
        gateway_logger.removeHandler(logged)
    for _, details in figures.values():
        details["logged"] = logged.first
    figures["memory"][1]["logged_count"] = logged.count
    return figures


# --------------------------------------------------------------------------------------
# Reporting


def report(rounds: list[Round], sizes: Sizes, args: Any, redis_version: str) -> bool:
    """Print the table, PASS/FAIL per target and one JSON line; True when all hold."""
    checks = targets(sizes)
    header = ("measurement", *(f"{b} median (spread)" for b in BACKENDS), "unit", "target")
    rows: list[tuple[str, ...]] = []
    summary: dict[str, dict[str, dict[str, float | None]]] = {b: {} for b in BACKENDS}
    medians: dict[tuple[str, str], float | None] = {}
    units = {metric.key: metric.unit for metric in metrics(sizes)}
    for metric in metrics(sizes):
        cells: list[str] = []
        for backend in BACKENDS:
            values = [r[backend][0][metric.key] / metric.scale for r in rounds]
            cell, median = _cell(values)
            cells.append(cell)
            medians[backend, metric.key] = median
            measured = [value for value in values if not math.isnan(value)]
            summary[backend][metric.key] = {
                "median": None if median is None else round(median, 6),
                "min": round(min(measured), 6) if measured else None,
                "max": round(max(measured), 6) if measured else None,
            }
        goals = "; ".join(
            f"{check.backend} {check.text(metric.unit)}"
            for check in checks
            if check.key == metric.key
        )
        rows.append((metric.label, *cells, metric.unit, goals))
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    print()
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print()
    print(f"{sizes.big:,}-step flow, CPU per step (us) by tenths of the flow, each round:")
    for index, figures in enumerate(rounds):
        for backend in BACKENDS:
            tenths = figures[backend][1]["tenths_us"]
            traced = figures[backend][1]["traced_wall_s"]
            print(
                f"  round {index + 1}, {backend}: {' '.join(f'{t:,.0f}' for t in tenths)} "
                f"(under tracemalloc the session took {traced:g} s)"
            )
    for index, figures in enumerate(rounds):
        for backend in BACKENDS:
            for line in figures[backend][1]["problems"][:5]:
                print(f"  round {index + 1}, {backend}: {line}")
        logged = figures["memory"][1].get("logged_count", 0)
        if logged:
            print(f"  round {index + 1}: the gateway logged {logged} at WARNING or above:")
            for line in figures["memory"][1]["logged"]:
                print(f"    {line}")
    print()
    verdicts = []
    for check in checks:
        median = medians[check.backend, check.key]
        ok = median is not None and check.met(median)
        verdicts.append(ok)
        value = "not measured" if median is None else shown(median)
        print(
            f"{'PASS' if ok else 'FAIL'} {check.backend} {check.key}: median {value} "
            f"(target {check.text(units[check.key])})"
        )
    passed = all(verdicts)
    print(
        json.dumps(
            {
                "benchmark": "flow_bench",
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "quick": args.quick,
                "rounds": len(rounds),
                "sizes": {
                    "sessions": sizes.sessions,
                    "block": sizes.block,
                    "warmup": sizes.warmup,
                    "steps": sizes.steps,
                    "big": sizes.big,
                },
                "cpus": os.cpu_count(),
                "cpu_model": _machine(),
                "python": platform.python_version(),
                "redis_server": redis_version,
                "redis_py": version("redis"),
                "metrics": summary,
                "tenths_us": {b: [r[b][1]["tenths_us"] for r in rounds] for b in BACKENDS},
                "pass": passed,
            }
        )
    )
    return passed


def _round_line(index: int, total: int, figures: Round, took: float) -> str:
    parts = []
    for backend in BACKENDS:
        values = figures[backend][0]
        parts.append(
            f"{backend}: {values['step_cpu_us'] / NS_PER_US:.0f} us per chained step, "
            f"{values['wide_step_cpu_us'] / NS_PER_US:.0f} per independent one; big flow "
            f"{values['big_completed']:.0f} steps in {values['big_wall_s'] / NS_PER_S:.1f} s, "
            f"{values['big_first_us'] / NS_PER_US:.0f} -> "
            f"{values['big_last_us'] / NS_PER_US:.0f} us per step, "
            f"peak {values['big_peak_mb'] / 1e6:.1f} MB"
        )
    return f"  round {index + 1}/{total}: {'; '.join(parts)} ({took:.1f} s)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.flow_bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--rounds", type=int, help="rounds to take medians over (default 3; quick 1)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if not 1 <= args.rounds <= 100:
        parser.error("--rounds must be between 1 and 100")
    sizes = QUICK if args.quick else FULL
    _terminate_on_sigterm()
    loading = time.perf_counter()
    tags = tagset_from_texts({"acme.yaml": tags_yaml(sizes)})
    caller = resolve(tags, Principal("alice", "acme"))
    loaded = time.perf_counter() - loading
    shown_flows = sorted(info.tag for info in caller.flows)
    if shown_flows != sorted(FLOWS.values()):
        raise SystemExit(f"flow_bench: the caller has the flows {shown_flows}")
    redis_version = _redis_server_version()

    with private_redis() as server:
        print(
            f"flow_bench: memory:// and a private redis-server {redis_version} on "
            f"127.0.0.1:{server.port} (redis-py {version('redis')}); {args.rounds} rounds; "
            f"per round and backend {sizes.sessions} flow sessions of each kind (1 step, "
            f"{sizes.steps} chained, {sizes.steps} independent; {TOOL}) in blocks of "
            f"{sizes.block} after {sizes.warmup} of each, then a {sizes.big:,}-step flow "
            f"twice (timed; under tracemalloc); tags loaded in {loaded:.2f} s; "
            f"Python {platform.python_version()}, {os.cpu_count()} CPUs ({_machine()}), "
            f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
            flush=True,
        )
        rounds: list[Round] = []
        for index in range(args.rounds):
            started = time.perf_counter()
            rounds.append(anyio.run(run_round, sizes, caller, server))
            print(
                _round_line(index, args.rounds, rounds[-1], time.perf_counter() - started),
                flush=True,
            )
        ok = report(rounds, sizes, args, redis_version)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
