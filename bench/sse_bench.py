"""SSE benchmark: 500 clients following live sessions through `GET /events/{id}`, on one
gateway and through a second replica.

It starts a private `redis-server` (from PATH, on a free 127.0.0.1 port, nothing
persisted; never the shared one on 6379) and, per round and scenario, fresh gateway
processes (`python -m gateway.cli serve --config <tmp gateway.yaml> --port N`, bound to
127.0.0.1: bench/sse_rig.py) on that Redis, with the scripted planner (a script of one
`clarify`, so that every session asks and waits, its stream left open), one API key
(`auth.dev`) and `engine.recover: false`. Then:

1. 50 sessions are created through `POST /sessions` on the first gateway, and read back
   until each is `input_required`;
2. a client process of its own (bench/sse_clients.py: asyncio on uvloop with aiohttp)
   opens 500 SSE connections, 10 per session, to the gateway that serves the streams, 50
   at a time (`--open-at-once`; a connection counts until its `snapshot` frame), and
   reports once every one has had its snapshot;
3. the benchmark appends `{"type": "bench", "sent": time.time_ns()}` straight into the
   sessions' event streams through a `StateStore` of its own (`open_store`, then
   `store.append(session, Stream.EVENTS, ...)`), 20 passes over the sessions in a random
   order each, at 100 appends/s (`--rate`); the delivery latency is the client's
   `time.time_ns()` as the frame's line is read, less `sent` (the same machine's clock);
4. the burst: the serving gateway is restarted and a second client process opens the 500
   connections on the new process all at once, as when a replica's clients reconnect
   together after it restarted; it counts the snapshots and the failures, then closes.

Scenarios: **one gateway** (sessions created on it, streams served by it) and **second
replica** (two gateways on the same Redis: sessions created on the first, the 500 clients
connected to the second), their order alternating round by round. What each measures is
`METRICS`: latency, events not delivered, the serving gateway's RSS and CPU, the client's
and redis-server's CPU, Redis round trips, commands and connections, what the gateways
logged, the machine's busy CPU (and other processes' share of it) and the burst.

Targets, on the medians over the rounds: p99 delivery latency under 100 ms in both
scenarios; every stream opened and every event delivered. Exit 1 when one is missed; the
burst is reported, with no target. This is not a test: the test suite never asserts on
time. Every wait is bounded, and every child process is reaped however the benchmark ends.

Run it with `bench/run sse` (or `.venv/bin/python -m bench.sse_bench`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Final

import anyio
import httpx2

from bench.ab_bench import cpu_ns
from bench.engine_bench import (
    _cell,
    _machine,
    _redis_server_version,
    _terminate_on_sigterm,
    private_redis,
    ready_store,
    redis_flush,
    shown,
)
from bench.measure import NS_PER_MS, NS_PER_S, NS_PER_US, Metric, percentile
from bench.sse_clients import ENDED_RETRY
from bench.sse_rig import (
    AUTH,
    append_events,
    children,
    create_sessions,
    machine_busy_ns,
    redis_info,
    rss_bytes,
    start_client,
    start_gateway,
    wait_ready,
)
from tests.redis_server import RedisServer

# --------------------------------------------------------------------------------------
# Sizes and targets


@dataclass(frozen=True, slots=True)
class Sizes:
    sessions: int
    per_session: int
    """SSE connections per session."""
    events: int
    """Events appended per session."""
    rate: float
    """Appends per second, over all sessions."""

    @property
    def streams(self) -> int:
        return self.sessions * self.per_session

    @property
    def appends(self) -> int:
        return self.sessions * self.events

    @property
    def deliveries(self) -> int:
        return self.streams * self.events


FULL = Sizes(sessions=50, per_session=10, events=20, rate=100.0)
QUICK = Sizes(sessions=10, per_session=10, events=10, rate=50.0)

SCENARIOS: Final = ("one", "replica")
TITLES: Final = {"one": "one gateway", "replica": "second replica"}
P99_TARGET_MS: Final = 100.0

OPEN_AT_ONCE: Final = 50
"""Streams opening at a time for the measurement (each until its snapshot). All at once
is the burst, measured after it: see run_scenario."""
SETTLE: Final = 1.0
"""Seconds between the last snapshot and the RSS taken with every stream open."""
DRAIN_TIMEOUT: Final = 20.0
"""After the last append, for the client to receive what is still on its way."""
LOG_PROBLEMS: Final = 5

METRICS: tuple[Metric, ...] = (
    Metric("streams", "SSE streams open (snapshot received)", 1, "streams"),
    Metric("open_s", "opening them all, to the last snapshot", 1, "s"),
    Metric("p50_ms", "delivery latency p50, append to client", 1, "ms"),
    Metric("p99_ms", "delivery latency p99", 1, "ms", target=P99_TARGET_MS),
    Metric("max_ms", "delivery latency max", 1, "ms"),
    Metric("lost", "events not delivered (of those expected)", 1, "events"),
    Metric("rate", "append rate reached", 1, "/s"),
    Metric("rss_before_mb", "serving gateway RSS, before the streams", 1, "MB"),
    Metric("rss_open_mb", "serving gateway RSS, all streams open", 1, "MB"),
    Metric("per_stream_kb", "RSS per open stream", 1, "KB"),
    Metric("gateway_cpu_us", "serving gateway CPU per delivered event", 1, "us"),
    Metric("client_cpu_us", "client process CPU per delivered event", 1, "us"),
    Metric("redis_cpu_us", "redis-server CPU per appended event", 1, "us"),
    Metric("redis_scripts", "Redis round trips (scripts) per appended event", 1, "calls"),
    Metric("redis_calls", "Redis commands per appended event, in scripts too", 1, "calls"),
    Metric("redis_conns", "Redis connections added by the open streams", 1, "conns"),
    Metric("logged", "gateway log lines at WARNING or above", 1, "lines"),
    Metric("busy_cores", "machine CPU busy during the events", 1, "cores"),
    Metric("others_cores", "of which processes not this benchmark's", 1, "cores"),
    Metric("burst_opened", "burst: streams opened, all at once", 1, "streams"),
    Metric("burst_503", "burst: answered 503", 1, "streams"),
    Metric("burst_ended", "burst: streams ended with a retry: hint", 1, "streams"),
    Metric("burst_s", "burst: to the last snapshot or failure", 1, "s"),
    Metric("burst_logged", "burst: gateway log lines at WARNING or above", 1, "lines"),
)


def exact_targets(sizes: Sizes) -> dict[str, float]:
    """Counts whose median must equal a value, by metric key."""
    return {"streams": sizes.streams, "lost": 0}


# --------------------------------------------------------------------------------------
# One scenario


@dataclass
class Outcome:
    figures: dict[str, float]
    problems: list[str]


async def run_scenario(
    scenario: str,
    sizes: Sizes,
    server: RedisServer,
    directory: Path,
    rng: random.Random,
    open_at_once: int,
) -> Outcome:
    url = server.url
    redis_pid = server.process.pid if server.process is not None else None
    events_timeout = sizes.appends / sizes.rate * 2 + DRAIN_TIMEOUT
    await redis_flush(url)
    with children(directory) as group:
        first = start_gateway(group, directory, "a", url)
        second = start_gateway(group, directory, "b", url) if scenario == "replica" else None
        gateways = [g for g in (first, second) if g is not None]
        for gateway in gateways:
            await anyio.to_thread.run_sync(wait_ready, gateway)
        serving = second or first
        async with httpx2.AsyncClient(timeout=10) as http:
            sessions = await create_sessions(http, first.base, sizes.sessions)
            if second is not None:  # the other replica sees them too
                answer = await http.get(f"{second.base}/sessions/{sessions[0]}", headers=AUTH)
                if answer.status_code != 200:
                    raise RuntimeError(f"the second replica: {answer.status_code} {answer.text}")
        await anyio.sleep(SETTLE)
        rss_before = rss_bytes(serving.pid)
        info_before = await redis_info(url)

        # The measurement: every stream opened (`open_at_once` at a time), then events.
        launch = functools.partial(
            start_client,
            group,
            directory,
            sessions=sessions,
            per_session=sizes.per_session,
            events_timeout=events_timeout,
        )
        client = launch("client", serving.base, events=sizes.events, open_at_once=open_at_once)
        ready = await client.ready()
        await anyio.sleep(SETTLE)
        rss_open = rss_bytes(serving.pid)
        info_open = await redis_info(url)
        async with ready_store(url) as store:
            await store.ping()  # its connection made before the clock starts
            info_go = await redis_info(url)
            ours = [g.pid for g in gateways] + ([redis_pid] if redis_pid else [])
            cpu_go = {pid: cpu_ns(pid) for pid in ours}
            busy_go, self_go, wall_go = machine_busy_ns(), time.process_time_ns(), time.time()
            client.go()
            rate = await append_events(store, sessions, sizes.events, sizes.rate, rng)
            result = await client.result()
            busy = machine_busy_ns() - busy_go
            wall = time.time() - wall_go
            spent = {pid: cpu_ns(pid) - cpu_go[pid] for pid in ours}
            spent_self = time.process_time_ns() - self_go
            info_end = await redis_info(url)
            gateway_cpu = spent[serving.pid]
            redis_cpu = spent[redis_pid] if redis_pid else 0
            # The client's CPU is its own figure from `go` until it has every event, a
            # little shorter than this window: others' share is, if anything, overstated.
            client_s = float(result["cpu_events_s"])
            ours_ns = sum(spent.values()) + spent_self + client_s * NS_PER_S
        logged_at = {gateway.name: gateway.log_size() for gateway in gateways}
        problems = [line for gateway in gateways for line in gateway.problems()]
        logged = len(problems)

        for gateway in gateways:
            if gateway.process.poll() is not None:
                problems.append(f"{gateway.name} exited ({gateway.process.returncode})")

        # Then the burst: the serving gateway restarts, and every stream is opened on the
        # new process at once, as when all of a replica's clients reconnect together
        # after it restarted; counted, then closed.
        group.stop(serving)
        restarted = start_gateway(group, directory, f"{serving.name[-1]}2", url)
        await anyio.to_thread.run_sync(wait_ready, restarted)
        burst = await launch("burst", restarted.base, events=0, open_at_once=sizes.streams).result()
        burst_logged = restarted.problems() + [
            line
            for gateway in gateways
            if gateway is not serving
            for line in gateway.problems(since=logged_at[gateway.name])
        ]
    problems += [f"client at open: {line}" for line in ready["errors"][:LOG_PROBLEMS]]
    problems += [f"client: {line}" for line in result["errors"][len(ready["errors"]) :]]
    problems += [f"burst: {reason}: {count}" for reason, count in burst["reasons"].items()]
    problems += [f"burst, {line}" for line in burst_logged[:LOG_PROBLEMS]]

    latencies: list[int] = sorted(result["latencies_ns"])
    delivered = len(latencies)
    # Commands of the event phase, less this benchmark's own INFO and CLIENT LIST (3).
    calls = info_end["calls"] - info_go["calls"] - 3
    figures = {
        "streams": float(ready["opened"]),
        "open_s": float(ready["open_s"]),
        "p50_ms": percentile(latencies, 0.50) / NS_PER_MS if latencies else math.nan,
        "p99_ms": percentile(latencies, 0.99) / NS_PER_MS if latencies else math.nan,
        "max_ms": latencies[-1] / NS_PER_MS if latencies else math.nan,
        "lost": float(sizes.deliveries - delivered),
        "rate": rate,
        "rss_before_mb": rss_before / 1e6,
        "rss_open_mb": rss_open / 1e6,
        "per_stream_kb": (rss_open - rss_before) / sizes.streams / 1e3,
        "gateway_cpu_us": gateway_cpu / NS_PER_US / delivered if delivered else math.nan,
        "client_cpu_us": client_s * 1e6 / delivered if delivered else math.nan,
        "redis_cpu_us": redis_cpu / NS_PER_US / sizes.appends if redis_pid else math.nan,
        "redis_scripts": (info_end["scripts"] - info_go["scripts"]) / sizes.appends,
        "redis_calls": calls / sizes.appends,
        "redis_conns": info_open["connected"] - info_before["connected"],
        "logged": float(logged),
        "busy_cores": busy / NS_PER_S / wall,
        "others_cores": max(0.0, busy - ours_ns) / NS_PER_S / wall,
        "burst_opened": float(burst["opened"]),
        "burst_503": float(burst["reasons"].get("HTTP 503", 0)),
        "burst_ended": float(burst["reasons"].get(ENDED_RETRY, 0)),
        "burst_s": float(burst["open_s"]),
        "burst_logged": float(len(burst_logged)),
        "gaps": float(result["gaps"]),
        "pubsub_conns": info_open["pubsub"],
        "conns_after_events": info_end["connected"] - info_before["connected"],
    }
    return Outcome(figures, problems)


Round = dict[str, Outcome]


async def run_round(
    index: int, sizes: Sizes, server: RedisServer, logs: Path | None, open_at_once: int
) -> Round:
    rng = random.Random(index)
    # Alternate the scenarios' order round by round, so that drift hits both alike.
    order = SCENARIOS if index % 2 == 0 else SCENARIOS[::-1]
    outcomes: Round = {}
    for scenario in order:
        with contextlib.ExitStack() as stack:
            if logs is None:
                prefix = f"sse-bench-{scenario}-"
                directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
            else:  # kept: the gateways' and the client's logs, configs and results
                directory = logs / f"round{index + 1}-{scenario}"
                shutil.rmtree(directory, ignore_errors=True)
                directory.mkdir(parents=True)
            outcomes[scenario] = await run_scenario(
                scenario, sizes, server, directory, rng, open_at_once
            )
    return outcomes


# --------------------------------------------------------------------------------------
# Reporting


def report(
    rounds: list[Round], sizes: Sizes, args: argparse.Namespace, meta: dict[str, Any]
) -> bool:
    exact = exact_targets(sizes)
    header = ("measurement", *(f"{TITLES[s]} median (spread)" for s in SCENARIOS), "unit", "target")
    rows: list[tuple[str, ...]] = []
    medians: dict[tuple[str, str], float | None] = {}
    summary: dict[str, dict[str, dict[str, float | None]]] = {s: {} for s in SCENARIOS}
    for metric in METRICS:
        cells = []
        for scenario in SCENARIOS:
            values = [r[scenario].figures[metric.key] for r in rounds]
            cell, median = _cell(values)
            cells.append(cell)
            medians[scenario, metric.key] = median
            measured = [v for v in values if not math.isnan(v)]
            summary[scenario][metric.key] = {
                "median": None if median is None else round(median, 4),
                "min": round(min(measured), 4) if measured else None,
                "max": round(max(measured), 4) if measured else None,
            }
        goal = metric.target_text() or (
            f"= {shown(exact[metric.key])}" if metric.key in exact else ""
        )
        rows.append((metric.label, *cells, metric.unit, goal))
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    print()
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print()
    for index, outcome in enumerate(rounds):
        for scenario in SCENARIOS:
            figures = outcome[scenario].figures
            p99 = "n/a" if math.isnan(figures["p99_ms"]) else shown(figures["p99_ms"])
            extra = (
                f"p99 {p99} ms with {figures['others_cores']:.2f} cores "
                f"busy with other processes; pub/sub connections "
                f"{figures['pubsub_conns']:.0f}, Redis connections added by the end of the "
                f"events {figures['conns_after_events']:.0f}, gap frames {figures['gaps']:.0f}"
            )
            print(f"  round {index + 1}, {TITLES[scenario]}: {extra}")
            for line in outcome[scenario].problems[:LOG_PROBLEMS]:
                print(f"    {line}")
    print()
    verdicts = []
    for scenario in SCENARIOS:
        for metric in METRICS:
            median = medians[scenario, metric.key]
            if metric.target is not None:
                ok = median is not None and metric.met(median)
                goal = metric.target_text()
            elif metric.key in exact:
                ok = median is not None and median == exact[metric.key]
                goal = f"= {shown(exact[metric.key])}"
            else:
                continue
            verdicts.append(ok)
            value = "not measured" if median is None else shown(median)
            print(
                f"{'PASS' if ok else 'FAIL'} {TITLES[scenario]} {metric.key}: median {value} "
                f"{metric.unit} (target {goal})"
            )
    passed = all(verdicts)
    print(
        json.dumps(
            {
                "benchmark": "sse_bench",
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "quick": args.quick,
                "rounds": len(rounds),
                "sizes": asdict(sizes),
                **meta,
                "metrics": summary,
                "pass": passed,
            }
        )
    )
    return passed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.sse_bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--rounds", type=int, help="rounds to take medians over (default 3; quick 1)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--rate", type=float, help="appends per second over all sessions")
    parser.add_argument(
        "--logs", type=Path, help="keep each scenario's logs, configs and results under this"
    )
    parser.add_argument(
        "--open-at-once",
        type=int,
        default=OPEN_AT_ONCE,
        help=f"streams opening at a time for the measurement (default {OPEN_AT_ONCE})",
    )
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if not 1 <= args.rounds <= 50:
        parser.error("--rounds must be between 1 and 50")
    sizes = QUICK if args.quick else FULL
    if args.open_at_once < 1:
        parser.error("--open-at-once must be at least 1")
    if args.rate is not None:
        if not 1 <= args.rate <= 5_000:
            parser.error("--rate must be between 1 and 5000")
        sizes = Sizes(sizes.sessions, sizes.per_session, sizes.events, args.rate)
    if shutil.which("redis-server") is None:
        raise SystemExit("sse_bench: redis-server is not on PATH (e.g. apt-get install it)")
    _terminate_on_sigterm()
    meta = {
        "cpus": os.cpu_count(),
        "cpu_model": _machine(),
        "python": platform.python_version(),
        "redis_server": _redis_server_version(),
        "redis_py": version("redis"),
        "aiohttp": version("aiohttp"),
        "uvicorn": version("uvicorn"),
        "sse_starlette": version("sse-starlette"),
    }
    with private_redis() as server:
        print(
            f"sse_bench: a private redis-server {meta['redis_server']} on "
            f"127.0.0.1:{server.port}; {args.rounds} rounds; per round and scenario "
            f"{sizes.sessions} sessions, {sizes.streams} SSE streams "
            f"({sizes.per_session} per session), {sizes.appends} appends at "
            f"{sizes.rate:g}/s ({sizes.deliveries:,} deliveries); Python "
            f"{meta['python']}, {meta['cpus']} CPUs ({meta['cpu_model']}), load average "
            f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}",
            flush=True,
        )
        rounds: list[Round] = []
        for index in range(args.rounds):
            started = time.perf_counter()
            rounds.append(anyio.run(run_round, index, sizes, server, args.logs, args.open_at_once))
            parts = [
                f"{TITLES[s]}: p50 {rounds[-1][s].figures['p50_ms']:.1f} ms, p99 "
                f"{rounds[-1][s].figures['p99_ms']:.1f} ms, "
                f"{rounds[-1][s].figures['per_stream_kb']:.0f} KB/stream, "
                f"lost {rounds[-1][s].figures['lost']:.0f}"
                for s in SCENARIOS
            ]
            print(
                f"  round {index + 1}/{args.rounds}: {'; '.join(parts)} "
                f"({time.perf_counter() - started:.1f} s; load average now "
                f"{os.getloadavg()[0]:.2f})",
                flush=True,
            )
        ok = report(rounds, sizes, args, meta)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
