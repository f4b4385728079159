"""Engine benchmark: the agent-session engine's own cost, the model left out.

Sessions are driven by `ScriptedPlanner` (a list of envelopes: it costs nothing, so what is
measured is the engine) as a caller whose tags grant `gateway__ping` and trust its output
(so no session is ever tainted), calling the gateway's own tools, an in-process upstream
of the pool (`own_upstream()`: the SDK client over memory streams, no child process).
The engine is built as the runtime builds it (`Engine(ToolService(pool), store, lambda
context: build_view(context, pool.catalog).tools, planner, lease=15.0)`), without the audit
log's hook. It starts a private `redis-server` (from PATH, on a free loopback port, nothing
persisted; never the shared one on 6379) and measures, per round, on a `memory://` store
and on that Redis (`open_store` with its defaults):

- CPU per decision: sessions one after another (`engine.start`, then `engine.run` to
  `completed`), in alternating blocks of two kinds: reply-only sessions (one decision: the
  engine's bookkeeping alone, its claim, events and snapshots) and sessions of three
  `gateway__ping` calls and a reply (four decisions). The process's CPU time
  (`time.process_time_ns`) per decision of each kind, and per decision that calls the tool
  (the difference between the kinds per call); for Redis also redis-server's own CPU (its
  per-process clock), which the process's time does not hold; wall time per session;
- 200 sessions at once: started together in one task group, each three calls and a reply;
  every one must complete, with no exception and nothing logged at WARNING or above by the
  gateway; wall time, the slowest session, CPU per decision;
- memory per finished session: 1,000 sessions (250 on Redis) of three calls and a reply on
  a fresh store, with tracemalloc on: the Python memory the process keeps per finished
  session (on `memory://`, the store's copy of its events, tool results and snapshot; on
  Redis it should keep nothing), and for Redis the server's `used_memory` per session.

Every measurement is repeated for `--rounds` rounds; the figures reported are the medians
over the rounds, with the spread (lowest and highest round). Targets are checked on the
medians, and the process exits with status 1 when one is missed. This is not a test: the
test suite never asserts on time.

Run it with `bench/run engine` (or `.venv/bin/python -m bench.engine_bench`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import logging
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import Any, Final

import anyio
import mcp_types as types
from redis.asyncio import Redis

from bench.measure import NS_PER_MS, NS_PER_S, NS_PER_US, Metric, figure
from gateway.calls import ToolService
from gateway.engine.loop import Engine, SessionResult
from gateway.engine.planners.scripted import ScriptedPlanner
from gateway.engine.states import SessionState
from gateway.front.views import build_view
from gateway.own_tools import own_upstream
from gateway.principal import Principal
from gateway.state import TTLs, open_store
from gateway.state.base import StateStore, Stream
from gateway.tags.context import ResolvedContext
from gateway.tags.loader import tagset_from_texts
from gateway.tags.resolve import resolve
from gateway.upstreams.pool import Pool
from tests.redis_server import RedisServer, running

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
    calls: int
    """Tool envelopes before the reply in a session that calls."""
    concurrent: int
    """Sessions started at once."""
    retained: int
    """Finished sessions whose memory is measured on `memory://`, per round."""
    retained_redis: int
    """The same on Redis (slower under tracemalloc; the server's figure does not vary)."""

    def kept(self, backend: str) -> int:
        return self.retained_redis if backend == "redis" else self.retained


FULL = Sizes(
    sessions=600, block=100, warmup=50, calls=3, concurrent=200, retained=1_000, retained_redis=250
)
QUICK = Sizes(
    sessions=100, block=50, warmup=10, calls=3, concurrent=200, retained=200, retained_redis=50
)

BACKENDS: Final = ("memory", "redis")
KINDS: Final = ("reply", "tool")
TOOL: Final = "gateway__ping"

TAGS_YAML: Final = """
users:
  alice: {roles: [agent]}
tags:
  - tag: support
    kind: role
    payload:
      config:
        assigned_roles: [agent]
        allowed_tools: ["gateway__ping"]
        trusted_output: ["gateway__ping"]
      content: You help customers with their orders.
"""

READY_TIMEOUT: Final = 5.0
READY_POLL: Final = 0.01
POOL_TIMEOUT: Final = 20.0
PHASE_TIMEOUT: Final = 120.0
"""For a block of sessions run one after another (a warm-up, a timed block, the sessions
kept): one deadline per block, so that the timed sessions carry no cancel scope of ours."""
CONCURRENT_TIMEOUT: Final = 120.0
"""For every session started at once to finish."""
ROUND_TIMEOUT: Final = 300.0
TOP_SITES: Final = 6
"""Allocation sites shown for the memory per session."""

METRICS: tuple[Metric, ...] = (
    Metric("reply_cpu_us", "CPU per decision, reply-only sessions (1 decision)", NS_PER_US, "us"),
    Metric("tool_cpu_us", "CPU per decision, 3 calls + reply (4 decisions)", NS_PER_US, "us"),
    Metric("call_cpu_us", "CPU per decision that calls the tool", NS_PER_US, "us"),
    Metric("reply_server_us", "redis-server CPU per decision, reply-only", NS_PER_US, "us"),
    Metric("tool_server_us", "redis-server CPU per decision, 3 calls + reply", NS_PER_US, "us"),
    Metric("reply_wall_ms", "wall time per reply-only session", NS_PER_MS, "ms"),
    Metric("tool_wall_ms", "wall time per session of 3 calls + reply", NS_PER_MS, "ms"),
    Metric("conc_wall_s", "200 at once: wall time, all of them", NS_PER_S, "s"),
    Metric("conc_slowest_s", "200 at once: the slowest session", NS_PER_S, "s"),
    Metric("conc_cpu_us", "200 at once: CPU per decision", NS_PER_US, "us"),
    Metric("conc_completed", "200 at once: sessions completed", 1, "sessions"),
    Metric("conc_errors", "200 at once: errors", 1, "errors"),
    Metric("retained_bytes", "process memory kept per finished session", 1, "bytes"),
    Metric("server_bytes", "redis-server used_memory per finished session", 1, "bytes"),
)
BY_KEY: Final = {metric.key: metric for metric in METRICS}


@dataclass(frozen=True, slots=True)
class Target:
    backend: str
    key: str
    limit: float
    """In the metric's reported unit."""
    exact: bool = False
    """The median must equal `limit` (a count), else be at most `limit`."""

    def met(self, value: float) -> bool:
        return value == self.limit if self.exact else value <= self.limit

    def text(self) -> str:
        unit = BY_KEY[self.key].unit
        return f"{'=' if self.exact else '<='} {shown(self.limit)} {unit}"


def targets(sizes: Sizes) -> tuple[Target, ...]:
    return (
        Target("memory", "reply_cpu_us", 1_000.0),
        Target("memory", "tool_cpu_us", 1_000.0),
        Target("memory", "call_cpu_us", 1_000.0),
        *(Target(backend, "conc_errors", 0, exact=True) for backend in BACKENDS),
        *(Target(backend, "conc_completed", sizes.concurrent, exact=True) for backend in BACKENDS),
    )


# --------------------------------------------------------------------------------------
# The private redis-server, and CPU clocks


@contextlib.contextmanager
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of our own on a free loopback port, stopped on the way out."""
    if shutil.which("redis-server") is None:
        raise SystemExit("engine_bench: redis-server is not on PATH (e.g. apt-get install it)")
    with tempfile.TemporaryDirectory(prefix="engine-bench-redis-") as directory:
        server = RedisServer(Path(directory))
        with running(server):
            yield server


def _redis_server_version() -> str:
    binary = shutil.which("redis-server") or "redis-server"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    for word in out.stdout.split():
        if word.startswith("v="):
            return word.removeprefix("v=")
    return "unknown"


def _terminate_on_sigterm() -> None:
    # SIGTERM (from a runner or `timeout`) then unwinds like Ctrl-C, so the server is reaped.
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def server_cpu_ns(pid: int | None) -> int | None:
    """Another process's CPU time (every thread) by Linux's per-process clock,
    clockid (~pid << 3) | 2; None without a pid, or where it cannot be read."""
    if pid is None:
        return None
    try:
        return time.clock_gettime_ns(((~pid) << 3) | 2)
    except OSError:
        return None


def _machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return model


class Logged(logging.Handler):
    """Counts what the gateway logs at WARNING or above (the engine logs a session that
    failed, a claim it could not renew or release), and keeps the first few."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < 3:
            self.first.append(f"{record.levelname} {record.name}: {record.getMessage()}")


# --------------------------------------------------------------------------------------
# Sessions


def envelope(kind: str, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "confidence": 0.9, "reasoning": "the script says so", **fields}


def script(calls: int) -> list[dict[str, Any]]:
    """`calls` tool envelopes, each with its own arguments (the repeats budget allows the
    same call three times), as a JSON string; then a reply."""
    tools = [
        envelope("tool", call={"tool": TOOL, "arguments": json.dumps({"message": f"order {n}"})})
        for n in range(1_234, 1_234 + calls)
    ]
    return [*tools, envelope("reply", text="Your order 1234 has shipped.")]


@dataclass(slots=True)
class Rig:
    """What every engine of a round shares: the pool with the own tools, the call
    service, the caller."""

    pool: Pool
    service: ToolService
    caller: ResolvedContext
    sizes: Sizes

    def tools_for(self, context: ResolvedContext) -> Sequence[types.Tool]:
        return build_view(context, self.pool.catalog).tools

    def engine(self, store: StateStore, kind: str) -> Engine:
        planner = ScriptedPlanner(script(self.calls(kind)))
        return Engine(self.service, store, self.tools_for, planner, lease=15.0)

    def calls(self, kind: str) -> int:
        return 0 if kind == "reply" else self.sizes.calls

    def decisions(self, kind: str) -> int:
        return self.calls(kind) + 1


def problem(result: SessionResult, calls: int) -> str | None:
    """Why a session did not end as its script says, or None."""
    if result.state is not SessionState.COMPLETED:
        return f"{result.state.value}: {result.text}"
    if result.spent.get("turns") != calls + 1:
        return f"{result.spent.get('turns')} turns, expected {calls + 1}"
    if len(result.calls) != calls or not all(
        c.ok and c.decision == "allowed" for c in result.calls
    ):
        return f"calls {result.calls}, expected {calls} allowed and ok"
    return None


async def session(engine: Engine, rig: Rig, kind: str) -> str:
    """One session of `kind`, from start to its reply; its id. RuntimeError unless it
    completed as its script says. Its caller bounds its time (PHASE_TIMEOUT)."""
    started = await engine.start(rig.caller, "Where is my order 1234?")
    result = await engine.run(started)
    wrong = problem(result, rig.calls(kind))
    if wrong is not None:
        raise RuntimeError(f"session {result.session_id} ({kind}): {wrong}")
    return result.session_id


@contextlib.asynccontextmanager
async def ready_store(url: str) -> AsyncIterator[StateStore]:
    """A fresh store for `url`, opened with `open_store`'s defaults, once it is ready."""
    async with open_store(url, ttls=TTLs()) as store:
        for _ in range(int(READY_TIMEOUT / READY_POLL)):
            if store.status().ready:
                break
            await anyio.sleep(READY_POLL)
        else:
            raise RuntimeError(f"{store.url} not ready in {READY_TIMEOUT:g} s: {store.status()}")
        yield store


async def redis_used_memory(url: str) -> int:
    client = Redis.from_url(url)
    try:
        info = await client.info("memory")
        return int(info["used_memory"])
    finally:
        await client.aclose()


async def redis_flush(url: str) -> None:
    """Empty the private server (only ever ours: `url` is the server this run started)."""
    client = Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


# --------------------------------------------------------------------------------------
# Measuring


async def measure_sequential(
    rig: Rig, engines: dict[str, Engine], server_pid: int | None
) -> dict[str, float]:
    """CPU and wall time per decision and per session, kind by kind, in alternating
    blocks of sessions run one after another."""
    sizes = rig.sizes
    cpu = dict.fromkeys(KINDS, 0)
    wall = dict.fromkeys(KINDS, 0)
    server = dict.fromkeys(KINDS, 0)
    done = dict.fromkeys(KINDS, 0)
    blocks = max(1, sizes.sessions // sizes.block)
    for index in range(blocks):
        for kind in KINDS if index % 2 == 0 else KINDS[::-1]:
            engine = engines[kind]
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
    per_session = {kind: cpu[kind] / done[kind] for kind in KINDS}
    for kind in KINDS:
        decisions = done[kind] * rig.decisions(kind)
        result[f"{kind}_cpu_us"] = cpu[kind] / decisions
        result[f"{kind}_wall_ms"] = wall[kind] / done[kind]
        result[f"{kind}_server_us"] = server[kind] / decisions if server_pid else math.nan
    # A call's decision costs what a reply's does, and the call: the difference per call.
    result["call_cpu_us"] = (per_session["tool"] - per_session["reply"]) / sizes.calls
    return result


async def measure_concurrent(
    rig: Rig, engine: Engine, logged: Logged
) -> tuple[dict[str, float], list[str]]:
    """`concurrent` sessions of calls and a reply started at once: figures, and what went
    wrong (a session's exception or end, what the gateway logged)."""
    count = rig.sizes.concurrent
    calls = rig.sizes.calls
    problems: list[str] = []
    completed = 0
    slowest = 0

    async def one() -> None:
        nonlocal completed, slowest
        begin = time.perf_counter_ns()
        try:
            started = await engine.start(rig.caller, "Where is my order 1234?")
            result = await engine.run(started)
        except Exception as exc:
            problems.append(f"{type(exc).__name__}: {exc}")
            return
        slowest = max(slowest, time.perf_counter_ns() - begin)
        wrong = problem(result, calls)
        if wrong is None:
            completed += 1
        else:
            problems.append(f"session {result.session_id}: {wrong}")

    gc.collect()
    logged_before, first_before = logged.count, len(logged.first)
    cpu_start, wall_start = time.process_time_ns(), time.perf_counter_ns()
    with anyio.move_on_after(CONCURRENT_TIMEOUT) as scope:
        async with anyio.create_task_group() as tasks:
            for _ in range(count):
                tasks.start_soon(one)
    wall = time.perf_counter_ns() - wall_start
    cpu = time.process_time_ns() - cpu_start
    unfinished = count - completed - len(problems)
    if scope.cancelled_caught and unfinished:
        problems.append(f"{unfinished} sessions not finished within {CONCURRENT_TIMEOUT:g} s")
    logged_now = logged.count - logged_before
    problems += logged.first[first_before:]
    errors = (count - completed) + logged_now
    return {
        "conc_wall_s": wall,
        "conc_slowest_s": slowest,
        "conc_cpu_us": cpu / (count * (calls + 1)),
        "conc_completed": completed,
        "conc_errors": errors,
    }, problems


def _site(stat: tracemalloc.StatisticDiff, sessions: int) -> str:
    frame = stat.traceback[0]
    name = frame.filename
    for prefix in (str(Path(__file__).resolve().parent.parent) + "/", "site-packages/"):
        if prefix in name:
            name = name.split(prefix, 1)[1]
    return (
        f"{name}:{frame.lineno} {stat.size_diff / sessions:,.0f} B/session "
        f"({stat.count_diff / sessions:.1f} blocks)"
    )


async def stored_sizes(store: StateStore, session_id: str) -> dict[str, int]:
    """What the store holds of a finished session, as compact JSON (public API only)."""

    def size(value: Any) -> int:
        return len(json.dumps(value, separators=(",", ":")))

    events = await store.read(session_id, Stream.EVENTS, limit=1_000)
    results = await store.read(session_id, Stream.TOOL_RESULTS, limit=1_000)
    snapshot = await store.get_session_state(session_id)
    return {
        "events": len(events.events),
        "events_json": sum(size(event.data) for event in events.events),
        "tool_results": len(results.events),
        "tool_results_json": sum(size(event.data) for event in results.events),
        "snapshot_json": size(snapshot),
    }


async def measure_retained(
    rig: Rig, backend: str, url: str
) -> tuple[dict[str, float], dict[str, Any]]:
    """Memory kept per finished session (calls and a reply) on a fresh store: the
    process's (tracemalloc), and redis-server's `used_memory`; and where it went."""
    sizes = rig.sizes
    kept = sizes.kept(backend)
    redis = backend == "redis"
    gc.collect()
    tracemalloc.start(1)
    try:
        async with ready_store(url) as store:
            engine = rig.engine(store, "tool")
            with anyio.fail_after(PHASE_TIMEOUT):
                for _ in range(sizes.warmup):
                    await session(engine, rig, "tool")
            gc.collect()
            used_before = await redis_used_memory(url) if redis else 0
            snapshot_before = tracemalloc.take_snapshot()
            traced_before = tracemalloc.get_traced_memory()[0]
            last = ""
            with anyio.fail_after(PHASE_TIMEOUT):
                for _ in range(kept):
                    last = await session(engine, rig, "tool")
            gc.collect()
            traced_after = tracemalloc.get_traced_memory()[0]
            snapshot_after = tracemalloc.take_snapshot()
            used_after = await redis_used_memory(url) if redis else 0
            stored = await stored_sizes(store, last)
    finally:
        tracemalloc.stop()
    ignored = (
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    )
    diff = snapshot_after.filter_traces(ignored).compare_to(
        snapshot_before.filter_traces(ignored), "lineno"
    )
    top = sorted(diff, key=lambda stat: stat.size_diff, reverse=True)[:TOP_SITES]
    figures = {
        "retained_bytes": (traced_after - traced_before) / kept,
        "server_bytes": (used_after - used_before) / kept if redis else math.nan,
    }
    return figures, {"top": [_site(stat, kept) for stat in top], "stored": stored}


async def run_backend(
    backend: str, rig: Rig, server: RedisServer, logged: Logged
) -> tuple[dict[str, float], dict[str, Any]]:
    """One round of every measurement on `backend`: raw figures by metric key, and
    details (what went wrong, where the memory went)."""
    redis = backend == "redis"
    url = server.url if redis else "memory://"
    pid = server.process.pid if redis and server.process is not None else None
    result: dict[str, float] = {}
    try:
        async with ready_store(url) as store:
            engines = {kind: rig.engine(store, kind) for kind in KINDS}
            for kind in KINDS:  # warm-up: caches filled, the store's connections made
                with anyio.fail_after(PHASE_TIMEOUT):
                    for _ in range(rig.sizes.warmup):
                        await session(engines[kind], rig, kind)
            result.update(await measure_sequential(rig, engines, pid))
            concurrent, problems = await measure_concurrent(rig, engines["tool"], logged)
            result.update(concurrent)
        if redis:
            await redis_flush(url)
        retained, details = await measure_retained(rig, backend, url)
        result.update(retained)
    finally:
        if redis:  # the server lives for the whole run: leave it as each round found it
            # (best effort: a failure here must not hide the one that brought us here)
            with anyio.move_on_after(10, shield=True), contextlib.suppress(Exception):
                await redis_flush(url)
    details["problems"] = problems
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
                rig = Rig(pool, ToolService(pool), caller, sizes)
                listed = [tool.name for tool in rig.tools_for(caller)]
                if listed != [TOOL]:
                    raise RuntimeError(f"the caller is shown {listed}, expected [{TOOL!r}]")
                figures = {
                    backend: await run_backend(backend, rig, server, logged) for backend in BACKENDS
                }
                tasks.cancel_scope.cancel()
    finally:
        gateway_logger.removeHandler(logged)
    return figures


# --------------------------------------------------------------------------------------
# Reporting


def shown(value: float) -> str:
    """`figure`, for counts and for figures below zero too (memory freed meanwhile)."""
    if value == int(value) and abs(value) < 1e6:
        return f"{value:,.0f}"
    return f"-{figure(-value)}" if value < 0 else figure(value)


def _cell(values: Sequence[float]) -> tuple[str, float | None]:
    measured = [value for value in values if not math.isnan(value)]
    if not measured:
        return "n/a", None
    median = statistics.median(measured)
    if min(measured) == max(measured):
        return shown(median), median
    return f"{shown(median)} ({shown(min(measured))} to {shown(max(measured))})", median


def report(rounds: list[Round], sizes: Sizes, args: Any, redis_version: str) -> bool:
    """Print the table, PASS/FAIL per target and one JSON line; True when all hold."""
    checks = targets(sizes)
    header = ("measurement", *(f"{b} median (spread)" for b in BACKENDS), "unit", "target")
    rows: list[tuple[str, ...]] = []
    summary: dict[str, dict[str, dict[str, float | None]]] = {b: {} for b in BACKENDS}
    medians: dict[tuple[str, str], float | None] = {}
    for metric in METRICS:
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
            f"{check.backend} {check.text()}" for check in checks if check.key == metric.key
        )
        rows.append((metric.label, *cells, metric.unit, goals))
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    print()
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    last = rounds[-1]
    print()
    print(f"memory kept per finished session ({sizes.calls} calls + reply), last round:")
    for backend in BACKENDS:
        stored = last[backend][1]["stored"]
        print(
            f"  {backend}: the store holds {stored['events']} events "
            f"({stored['events_json']:,} bytes of JSON), {stored['tool_results']} tool results "
            f"({stored['tool_results_json']:,}), a snapshot of {stored['snapshot_json']:,}; "
            "top allocation sites:"
        )
        for site in last[backend][1]["top"]:
            print(f"    {site}")
    for index, figures in enumerate(rounds):
        for backend in BACKENDS:
            for line in figures[backend][1]["problems"][:5]:
                print(f"  round {index + 1}, {backend}, 200 at once: {line}")
    print()
    verdicts = []
    for check in checks:
        median = medians[check.backend, check.key]
        ok = median is not None and check.met(median)
        verdicts.append(ok)
        value = "not measured" if median is None else shown(median)
        print(
            f"{'PASS' if ok else 'FAIL'} {check.backend} {check.key}: median {value} "
            f"(target {check.text()})"
        )
    passed = all(verdicts)
    print(
        json.dumps(
            {
                "benchmark": "engine_bench",
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "quick": args.quick,
                "rounds": len(rounds),
                "sizes": {
                    "sessions": sizes.sessions,
                    "block": sizes.block,
                    "warmup": sizes.warmup,
                    "calls": sizes.calls,
                    "concurrent": sizes.concurrent,
                    "retained": sizes.retained,
                    "retained_redis": sizes.retained_redis,
                },
                "cpus": os.cpu_count(),
                "cpu_model": _machine(),
                "python": platform.python_version(),
                "redis_server": redis_version,
                "redis_py": version("redis"),
                "metrics": summary,
                "stored": {b: last[b][1]["stored"] for b in BACKENDS},
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
            f"{backend}: reply {values['reply_cpu_us'] / NS_PER_US:.0f} us, "
            f"tool {values['tool_cpu_us'] / NS_PER_US:.0f} us per decision, "
            f"200 at once {values['conc_errors']:.0f} errors in "
            f"{values['conc_wall_s'] / NS_PER_S:.2f} s, "
            f"{values['retained_bytes']:,.0f} B/session"
        )
    return f"  round {index + 1}/{total}: {'; '.join(parts)} ({took:.1f} s)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.engine_bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--rounds", type=int, help="rounds to take medians over (default 5; quick 1)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    if not 1 <= args.rounds <= 100:
        parser.error("--rounds must be between 1 and 100")
    sizes = QUICK if args.quick else FULL
    _terminate_on_sigterm()
    caller = resolve(tagset_from_texts({"acme.yaml": TAGS_YAML}), Principal("alice", "acme"))
    redis_version = _redis_server_version()

    with private_redis() as server:
        print(
            f"engine_bench: memory:// and a private redis-server {redis_version} on "
            f"127.0.0.1:{server.port} (redis-py {version('redis')}); {args.rounds} rounds; "
            f"per round and backend {sizes.sessions} reply-only sessions and {sizes.sessions} "
            f"of {sizes.calls} x {TOOL} and a reply, in blocks of {sizes.block} after "
            f"{sizes.warmup} of each; {sizes.concurrent} at once; {sizes.retained} kept "
            f"({sizes.retained_redis} on Redis); "
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
