"""State store benchmark: appends, follow latency and session state, on both backends.

Starts a private `redis-server` (from PATH, on a free loopback port, nothing persisted; never
the shared one on 6379) and measures, per round and side by side for `memory://` and that
Redis, through the store's public API only:

- pipelined appends: `append_many` of batches of 100 events (~200 bytes of JSON each) into
  a few sessions' event streams, one batch after another; events per second;
- single appends: `append` of one event at a time from 64 concurrent tasks, each on its own
  session; events per second;
- follow latency: 1,000 followers (`follow(session, Stream.EVENTS, after_id=...)`), each on
  its own session, started ten at a time, each proven subscribed by a warm-up event it must
  receive; then two passes of one append per session, in random order, at 500 appends per
  second (`--follow-rate`; at 1,000 the Redis backend's process saturates its core and
  reaches ~650); for every event the time from just before its `append` call (carried in
  the event) to its follower receiving it; p50 and p99, the rate reached, and the process's
  CPU time per event. When the followers cannot all be set up (a follow() raised, or 30 s
  passed) the latency is not measured in that round, and its target is missed;
- session state: `set_session_state` and `get_session_state` of a ~1 KB state, one call
  after another; p50 and p99 per call.

Both stores come from `open_store` with its defaults. Every measurement is repeated for
`--rounds` rounds, each round on freshly opened stores; the figures reported are the
medians over the rounds, with the spread (lowest and highest round). Targets (for the
Redis backend) are checked on the medians, and the process exits with status 1 when one is
missed. This is not a test: the test suite never asserts on time.

Run it with `bench/run state` (or `.venv/bin/python -m bench.state_bench`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from bench.measure import NS_PER_MS, NS_PER_US, Metric, figure, percentile
from gateway.state import StateError, StateStore, Stream, open_store
from tests.redis_server import RedisServer, running

# --------------------------------------------------------------------------------------
# Sizes and targets


@dataclass(frozen=True, slots=True)
class Sizes:
    batch_size: int
    """Events per `append_many` call."""
    batches: int
    """Timed `append_many` calls per round."""
    batch_sessions: int
    tasks: int
    """Concurrent tasks calling `append`, each on its own session."""
    appends_per_task: int
    followers: int
    follow_passes: int
    """Appends per follower measured per round (one per pass)."""
    follow_rate: float
    """Appends per second while measuring follow latency."""
    state_calls: int
    """Timed calls of each of `set_session_state` and `get_session_state` per round."""


FULL = Sizes(
    batch_size=100,
    batches=200,
    batch_sessions=4,
    tasks=64,
    appends_per_task=100,
    followers=1_000,
    follow_passes=2,
    follow_rate=500.0,
    state_calls=2_000,
)
QUICK = Sizes(
    batch_size=100,
    batches=20,
    batch_sessions=4,
    tasks=16,
    appends_per_task=20,
    followers=100,
    follow_passes=1,
    follow_rate=500.0,
    state_calls=200,
)

BACKENDS = ("memory", "redis")
EVENT_BYTES = 200
STATE_BYTES = 1_024


READY_TIMEOUT = 5.0
READY_POLL = 0.01
FOLLOW_SETUP_TIMEOUT = 30.0
"""For every follower to be subscribed and to have received its warm-up event."""
FOLLOW_DRAIN_TIMEOUT = 10.0
"""For every measured event to arrive after the last append."""
FOLLOW_WAVE = 10
"""Followers started together (then warmed up) before the next ones start."""
FOLLOW_SETTLE = 0.3
"""After the warm-up: each follower re-reads once before it waits; let those reads end."""
ROUND_TIMEOUT = 120.0
CLEANUP_TIMEOUT = 30.0


METRICS: tuple[Metric, ...] = (
    Metric("append_many_eps", "append_many, batches of 100", 1, "events/s", 20_000.0, True),
    Metric("append_eps", "append, concurrent tasks", 1, "events/s"),
    Metric("follow_p50_ms", "follow latency p50", NS_PER_MS, "ms"),
    Metric("follow_p99_ms", "follow latency p99", NS_PER_MS, "ms", 20.0),
    Metric("follow_max_ms", "follow latency max", NS_PER_MS, "ms"),
    Metric("follow_rate_eps", "append rate reached while following", 1, "events/s"),
    Metric("follow_cpu_us", "process CPU per followed event", NS_PER_US, "us"),
    Metric("follow_ready", "followers set up (waiting)", 1, "followers"),
    Metric("follow_setup_s", "follower set-up time", 1_000 * NS_PER_MS, "s"),
    Metric("set_p50_us", "set_session_state p50", NS_PER_US, "us"),
    Metric("set_p99_us", "set_session_state p99", NS_PER_US, "us"),
    Metric("get_p50_us", "get_session_state p50", NS_PER_US, "us"),
    Metric("get_p99_us", "get_session_state p99", NS_PER_US, "us"),
)
FOLLOW_KEYS = (
    "follow_p50_ms",
    "follow_p99_ms",
    "follow_max_ms",
    "follow_cpu_us",
    "follow_rate_eps",
    "follow_setup_s",
    "follow_ready",
)
"""NaN in a round whose followers could not all be set up."""

# --------------------------------------------------------------------------------------
# The data


def sized(base: dict[str, Any], size: int) -> dict[str, Any]:
    """`base` with a `note` that brings its compact JSON to about `size` bytes."""
    encoded = len(json.dumps({**base, "note": ""}, separators=(",", ":")))
    return {**base, "note": "x" * max(0, size - encoded)}


def event(kind: str, seq: int, t: int = 0) -> dict[str, Any]:
    return sized(
        {
            "type": kind,
            "seq": seq,
            "t": t,
            "tool": "crm__get_customer",
            "args": {"customer_id": f"C-{seq:06d}", "fields": ["name", "tier"]},
            "ok": True,
        },
        EVENT_BYTES,
    )


def session_state(index: int) -> dict[str, Any]:
    return sized(
        {
            "user_id": f"user_{index:04d}",
            "org_id": "org_042",
            "roles": ["agent", "senior_agent", "finance"],
            "intent": "refund",
            "tags_digest": "9f2c" * 16,
            "created_at": 1_795_000_000.0 + index,
            "history": [
                {"tool": f"crm__get_customer_{step}", "ok": step % 3 != 0, "ms": 12.5 * step}
                for step in range(6)
            ],
        },
        STATE_BYTES,
    )


# --------------------------------------------------------------------------------------
# The private redis-server


@contextlib.contextmanager
def private_redis() -> Iterator[int]:
    """A redis-server of our own on a free loopback port, stopped on the way out."""
    if shutil.which("redis-server") is None:
        raise SystemExit("state_bench: redis-server is not on PATH (e.g. apt-get install it)")
    with tempfile.TemporaryDirectory(prefix="state-bench-redis-") as directory:
        server = RedisServer(Path(directory))
        with running(server):
            yield server.port


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


# --------------------------------------------------------------------------------------
# Measuring


async def measure_append_many(
    store: StateStore, sizes: Sizes, prefix: str, sessions: list[str]
) -> float:
    targets = [f"{prefix}-batch-{index}" for index in range(sizes.batch_sessions)]
    sessions.extend(targets)
    batch = [event("tool_call", seq) for seq in range(sizes.batch_size)]
    for target in targets:  # warm-up: connections made, script loaded
        await store.append_many(target, Stream.EVENTS, batch)
    gc.collect()
    start = time.perf_counter_ns()
    for index in range(sizes.batches):
        await store.append_many(targets[index % len(targets)], Stream.EVENTS, batch)
    elapsed = time.perf_counter_ns() - start
    return sizes.batches * sizes.batch_size * 1e9 / elapsed


async def measure_append(
    store: StateStore, sizes: Sizes, prefix: str, sessions: list[str]
) -> float:
    targets = [f"{prefix}-single-{index}" for index in range(sizes.tasks)]
    sessions.extend(targets)
    payload = event("tool_call", 0)

    async def appender(session: str, count: int) -> None:
        for _ in range(count):
            await store.append(session, Stream.EVENTS, payload)

    async with anyio.create_task_group() as tasks:  # warm-up: the pool's connections made
        for target in targets:
            tasks.start_soon(appender, target, 2)
    gc.collect()
    start = time.perf_counter_ns()
    async with anyio.create_task_group() as tasks:
        for target in targets:
            tasks.start_soon(appender, target, sizes.appends_per_task)
    elapsed = time.perf_counter_ns() - start
    return sizes.tasks * sizes.appends_per_task * 1e9 / elapsed


async def measure_session_state(
    store: StateStore, sizes: Sizes, prefix: str, sessions: list[str]
) -> dict[str, float]:
    targets = [f"{prefix}-state-{index}" for index in range(100)]
    sessions.extend(targets)
    states = [session_state(index) for index in range(len(targets))]
    clock = time.perf_counter_ns
    for target, state in zip(targets, states, strict=True):  # warm-up, and every key exists
        await store.set_session_state(target, state)
    result: dict[str, float] = {}
    for name in ("set", "get"):
        times = [0] * sizes.state_calls
        gc.collect()
        for index in range(sizes.state_calls):
            target = targets[index % len(targets)]
            if name == "set":
                state = states[index % len(states)]
                start = clock()
                await store.set_session_state(target, state)
                times[index] = clock() - start
            else:
                start = clock()
                found = await store.get_session_state(target)
                times[index] = clock() - start
                if found is None:
                    raise RuntimeError(f"session state of {target} not found")
        times.sort()
        result[f"{name}_p50_us"] = percentile(times, 0.50)
        result[f"{name}_p99_us"] = percentile(times, 0.99)
    return result


@dataclass(slots=True)
class Inbox:
    """What the followers received: warm-up count, measured latencies, failures."""

    expected: int
    warm: int = 0
    latencies: list[int] = field(default_factory=list)
    gaps: int = 0
    failures: list[str] = field(default_factory=list)
    all_received: anyio.Event = field(default_factory=anyio.Event)

    def receive(self, data: dict[str, Any], received_at: int) -> None:
        if data["type"] == "warm":
            self.warm += 1
        else:
            self.latencies.append(received_at - data["t"])
            if len(self.latencies) == self.expected:
                self.all_received.set()


async def measure_follow(
    store: StateStore, sizes: Sizes, prefix: str, sessions: list[str], rng: random.Random
) -> dict[str, float]:
    """Follow latency; NaN figures (and the reason printed) when the followers could not
    all be set up within the bounds."""
    targets = [f"{prefix}-follow-{index:04d}" for index in range(sizes.followers)]
    sessions.extend(targets)
    # Each follower starts after an event of its own: a known `after_id`, as a client that
    # reconnects has.
    last_ids = [await store.append(t, Stream.EVENTS, event("seed", 0)) for t in targets]
    inbox = Inbox(sizes.followers * sizes.follow_passes)
    clock = time.perf_counter_ns

    async def follower(session: str, after_id: str) -> None:
        try:
            async for batch in store.follow(session, Stream.EVENTS, after_id=after_id):
                received_at = clock()
                if batch.gap is not None:
                    inbox.gaps += 1
                for item in batch.events:
                    inbox.receive(item.data, received_at)
        except StateError as exc:
            inbox.failures.append(f"follow() raised {type(exc).__name__}: {exc}")

    async def paced_appends(kind: str, order: Sequence[str], rate: float) -> None:
        begin = time.perf_counter()
        for index, session in enumerate(order):
            delay = begin + index / rate - time.perf_counter()
            if delay > 0:
                await anyio.sleep(delay)
            await store.append(session, Stream.EVENTS, event(kind, index, clock()))

    async def set_up(tasks: TaskGroup) -> str | None:
        """Start every follower; None when all are waiting, else why not."""
        # A follower has subscribed before it reads anything, so one that received its
        # warm-up event is subscribed; then it waits. Followers start in small waves, each
        # proven waiting before the next starts: this measures followers that are already
        # waiting. (A burst of 1,000 at once works too since RedisStore subscribes pending
        # channels together; bench/README.md.)
        deadline = time.monotonic() + FOLLOW_SETUP_TIMEOUT
        for first in range(0, len(targets), FOLLOW_WAVE):
            wave = range(first, min(first + FOLLOW_WAVE, len(targets)))
            for index in wave:
                tasks.start_soon(follower, targets[index], last_ids[index])
            try:
                await paced_appends("warm", [targets[i] for i in wave], sizes.follow_rate)
            except StateError as exc:
                return f"warm-up append raised {type(exc).__name__}: {exc}"
            while inbox.warm < wave.stop and not inbox.failures:
                if time.monotonic() > deadline:
                    return f"not all waiting within {FOLLOW_SETUP_TIMEOUT:g} s"
                await anyio.sleep(0.002)
            if inbox.failures:
                return inbox.failures[0]
        return None

    result: dict[str, float] = dict.fromkeys(FOLLOW_KEYS, math.nan)
    async with anyio.create_task_group() as tasks:
        setup_start = clock()
        failed = await set_up(tasks)
        result["follow_setup_s"] = clock() - setup_start
        result["follow_ready"] = inbox.warm
        if failed is not None:
            tasks.cancel_scope.cancel()
            print(
                f"    {store.url}: follow set-up failed after "
                f"{result['follow_setup_s'] / 1e9:.1f} s with {inbox.warm} of "
                f"{len(targets)} followers waiting: {failed}",
                flush=True,
            )
            return result
        await anyio.sleep(FOLLOW_SETTLE)
        gc.collect()
        # The process's CPU time per event: at a fixed rate, latency grows as it nears
        # one core, so this says how close the latency figures are to saturation.
        cpu_start, wall_start = time.process_time_ns(), clock()
        for _ in range(sizes.follow_passes):
            order = list(targets)
            rng.shuffle(order)
            await paced_appends("probe", order, sizes.follow_rate)
        # The appender waits for each append, so a saturated process appends more slowly
        # than asked: this is the rate the latency was measured at.
        rate = len(targets) * sizes.follow_passes * 1e9 / (clock() - wall_start)
        with anyio.move_on_after(FOLLOW_DRAIN_TIMEOUT):
            await inbox.all_received.wait()
        cpu = time.process_time_ns() - cpu_start
        tasks.cancel_scope.cancel()
    if len(inbox.latencies) != inbox.expected or inbox.gaps or inbox.failures:
        raise RuntimeError(
            f"followers received {len(inbox.latencies)} of {inbox.expected} events within "
            f"{FOLLOW_DRAIN_TIMEOUT} s of the last append, with {inbox.gaps} gaps and "
            f"{len(inbox.failures)} failures {inbox.failures[:1]}"
        )
    times = sorted(inbox.latencies)
    result["follow_p50_ms"] = percentile(times, 0.50)
    result["follow_p99_ms"] = percentile(times, 0.99)
    result["follow_max_ms"] = times[-1]
    result["follow_cpu_us"] = cpu / len(times)
    result["follow_rate_eps"] = rate
    return result


async def run_backend(
    backend: str, redis_url: str, sizes: Sizes, round_index: int, seed: int
) -> dict[str, float]:
    """One round of every measurement on a fresh store; raw figures by metric key."""
    rng = random.Random(seed * 1_000 + round_index)
    prefix = f"bench-r{round_index}"
    sessions: list[str] = []
    result: dict[str, float] = {}
    async with open_store("memory://" if backend == "memory" else redis_url) as store:
        for _ in range(int(READY_TIMEOUT / READY_POLL)):
            if store.status().ready:
                break
            await anyio.sleep(READY_POLL)
        else:
            raise RuntimeError(f"{store.url} not ready in {READY_TIMEOUT:g} s: {store.status()}")
        try:
            result["append_many_eps"] = await measure_append_many(store, sizes, prefix, sessions)
            result["append_eps"] = await measure_append(store, sizes, prefix, sessions)
            result.update(await measure_session_state(store, sizes, prefix, sessions))
            # Last: a failed follower set-up can leave the store's breaker open a moment.
            result.update(await measure_follow(store, sizes, prefix, sessions, rng))
        finally:
            # The server lives for the whole run: leave it as empty as each round found it
            # (best effort; what is left expires with its TTL and dies with the server).
            with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                for session in sessions:
                    with contextlib.suppress(StateError):
                        await store.delete_session(session)
    return result


async def run_round(
    redis_url: str, sizes: Sizes, round_index: int, seed: int
) -> dict[str, dict[str, float]]:
    with anyio.fail_after(ROUND_TIMEOUT):
        return {
            backend: await run_backend(backend, redis_url, sizes, round_index, seed)
            for backend in BACKENDS
        }


# --------------------------------------------------------------------------------------
# Reporting


def report(rounds: list[dict[str, dict[str, float]]], sizes: Sizes, args: Any) -> bool:
    """Print the table, PASS/FAIL per target and one JSON line; True when all targets hold.
    A figure not measured in some rounds (follower set-up failed) is the median of the
    others; not measured in any, it misses its target."""
    summary: dict[str, dict[str, dict[str, float | int | None]]] = {b: {} for b in BACKENDS}
    header = ("measurement", *(f"{b} median (spread)" for b in BACKENDS), "redis target", "")
    rows: list[tuple[str, ...]] = []
    verdicts: list[tuple[Metric, float | None, bool]] = []
    for metric in METRICS:
        cells: list[str] = []
        for backend in BACKENDS:
            values = [r[backend][metric.key] / metric.scale for r in rounds]
            measured = [value for value in values if not math.isnan(value)]
            median = statistics.median(measured) if measured else None
            summary[backend][metric.key] = {
                "median": None if median is None else round(median, 6),
                "min": round(min(measured), 6) if measured else None,
                "max": round(max(measured), 6) if measured else None,
                "first": None if math.isnan(values[0]) else round(values[0], 6),
                "rounds_measured": len(measured),
                "target": metric.target if backend == "redis" else None,
            }
            if median is None:
                cells.append("not measured")
            else:
                partial = (
                    f", {len(measured)} of {len(values)} rounds"
                    if len(measured) < len(values)
                    else ""
                )
                cells.append(
                    f"{figure(median)} {metric.unit} "
                    f"({figure(min(measured))}-{figure(max(measured))}{partial})"
                )
            if backend == "redis" and metric.target is not None:
                verdicts.append((metric, median, median is not None and metric.met(median)))
        verdict = ""
        if metric.target is not None:
            verdict = "PASS" if verdicts[-1][2] else "FAIL"
        rows.append((metric.label, *cells, metric.target_text(), verdict))
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    print()
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print()
    for metric, median, ok in verdicts:
        shown = "not measured" if median is None else f"{figure(median)} {metric.unit}"
        print(
            f"{'PASS' if ok else 'FAIL'} redis {metric.key}: median {shown} "
            f"(target {metric.target_text()})"
        )
    passed = all(ok for _, _, ok in verdicts)
    print(
        json.dumps(
            {
                "benchmark": "state_bench",
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "quick": args.quick,
                "rounds": len(rounds),
                "seed": args.seed,
                "sizes": {
                    "batch_size": sizes.batch_size,
                    "batches": sizes.batches,
                    "tasks": sizes.tasks,
                    "appends_per_task": sizes.appends_per_task,
                    "followers": sizes.followers,
                    "follow_events": sizes.followers * sizes.follow_passes,
                    "follow_rate": sizes.follow_rate,
                    "state_calls": sizes.state_calls,
                },
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "redis_server": _redis_server_version(),
                "redis_py": version("redis"),
                "metrics": summary,
                "pass": passed,
            },
            sort_keys=False,
        )
    )
    return passed


def _round_line(index: int, total: int, figures: dict[str, dict[str, float]], took: float) -> str:
    parts = []
    for backend in BACKENDS:
        p99 = figures[backend]["follow_p99_ms"]
        follow = "not measured" if math.isnan(p99) else f"{p99 / NS_PER_MS:.2f} ms"
        parts.append(
            f"{backend}: append_many {figures[backend]['append_many_eps']:,.0f}/s, "
            f"follow p99 {follow}"
        )
    return f"  round {index + 1}/{total}: {'; '.join(parts)} ({took:.1f} s)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.state_bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds to take medians over")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--followers", type=int, help="followers (default 1,000; quick 100)")
    parser.add_argument("--follow-rate", type=float, help="appends/s while following (default 500)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the follow order")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 100:
        parser.error("--rounds must be between 1 and 100")
    if args.followers is not None and not 1 <= args.followers <= 10_000:
        parser.error("--followers must be between 1 and 10,000")
    if args.follow_rate is not None and not 10 <= args.follow_rate <= 100_000:
        parser.error("--follow-rate must be between 10 and 100,000")
    sizes = QUICK if args.quick else FULL
    if args.followers is not None:
        sizes = dataclasses.replace(sizes, followers=args.followers)
    if args.follow_rate is not None:
        sizes = dataclasses.replace(sizes, follow_rate=args.follow_rate)
    _terminate_on_sigterm()

    with private_redis() as port:
        redis_url = f"redis://127.0.0.1:{port}/0"
        print(
            f"state_bench: memory:// and a private redis-server {_redis_server_version()} on "
            f"127.0.0.1:{port} (redis-py {version('redis')}); {args.rounds} rounds; per round "
            f"{sizes.batches} x append_many of {sizes.batch_size} ~{EVENT_BYTES}-byte events, "
            f"{sizes.tasks} tasks x {sizes.appends_per_task} appends, {sizes.state_calls} set "
            f"and get of a ~{STATE_BYTES}-byte state, {sizes.followers} followers x "
            f"{sizes.follow_passes} events at {sizes.follow_rate:g}/s; "
            f"Python {platform.python_version()}, {os.cpu_count()} CPUs",
            flush=True,
        )
        rounds: list[dict[str, dict[str, float]]] = []
        for index in range(args.rounds):
            started = time.perf_counter()
            rounds.append(anyio.run(run_round, redis_url, sizes, index, args.seed))
            print(
                _round_line(index, args.rounds, rounds[-1], time.perf_counter() - started),
                flush=True,
            )
        ok = report(rounds, sizes, args)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
