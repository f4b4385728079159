"""Upstream pool benchmark: what the pool adds to a tool call, and how fast it starts.

Per round, for each transport (stdio, streamable HTTP), it starts two copies of the test
suite's SDK echo upstream (`tests/upstreams/servers/echo.py`): one for an SDK `Client` used
directly, one behind a `Pool`. Then, side by side, in alternating blocks:

- **direct**: `Client.call_tool("echo", {"n": 1})`, as a gateway without a pool would;
- **pool**: `ToolService.call(context, ToolCall("echo__echo", {"n": 1}))`: the permission
  and scope check, the catalog lookup, JSON Schema validation of the arguments, the
  breaker and the time cap, and the same SDK call;

one call after another, alternating direct and pool call by call (latency per call, p50
and p99, and the process's CPU per call), and with 32 concurrent callers in alternating
blocks (latency per call and calls per second). The overhead is the pool's p50 minus the
direct p50, per round.

Start-up: 20 stdio upstreams in one `Pool`, from `run()` until every one is ready. The
upstreams are `bench/servers/tiny.py` (the standard library only), so the figure is the
gateway's; 20 copies of the SDK echo server are timed too, for reference: each pays ~0.5 s
of CPU for its imports, which a 2-core machine cannot run in parallel.

Targets, on the medians over the rounds: pool overhead < 0.3 ms p50, sequential, both
transports; 20 (tiny) upstreams ready < 3 s. Exit 1 when one is missed. This is not a
test: the test suite never asserts on time.

Run it with `bench/run upstream` (or `.venv/bin/python -m bench.upstream_bench`).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from bench.measure import NS_PER_MS, figure, percentile
from gateway.calls import ToolCall, ToolService
from gateway.principal import Principal
from gateway.tags.context import ResolvedContext
from gateway.tags.loader import tagset_from_texts
from gateway.tags.resolve import resolve
from gateway.upstreams.config import HttpUpstream, StdioUpstream
from gateway.upstreams.pool import Pool
from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
ECHO = [sys.executable, "-m", "tests.upstreams.servers.echo"]
TINY = [sys.executable, "-m", "bench.servers.tiny"]
ENV = {"PYTHONPATH": str(ROOT)}
CONCURRENCY = 32
OVERHEAD_TARGET_MS = 0.3
STARTUP_TARGET_S = 3.0
ORG = """
users:
  bench: {roles: [caller]}
tags:
  - tag: echo
    kind: tool
    payload:
      config:
        assigned_roles: [caller]
        allowed_tools: ["echo__*"]
        scopes:
          echo__echo: {n: {max: 10}}
"""

Call = Callable[[], Awaitable[object]]


def context() -> ResolvedContext:
    return resolve(tagset_from_texts({"acme.yaml": ORG}), Principal("bench", "acme"))


@contextmanager
def http_echo() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [*ECHO, "http", str(port)],
        cwd=ROOT,
        env={**os.environ, **ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the HTTP echo upstream did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@asynccontextmanager
async def direct_client(url: str | None) -> AsyncIterator[Client]:
    if url is None:
        params = StdioServerParameters(command=ECHO[0], args=ECHO[1:], cwd=str(ROOT), env=ENV)
        async with Client(params, cache=None) as client:
            yield client
        return
    async with (
        httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=None)) as http,
        Client(streamable_http_client(url, http_client=http), cache=None) as client,
    ):
        yield client


@asynccontextmanager
async def pooled(config: StdioUpstream | HttpUpstream) -> AsyncIterator[ToolService]:
    pool = Pool({"echo": config})
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(pool.run)
        with anyio.fail_after(30):
            await pool.connections["echo"].wait_ready()
        yield ToolService(pool)
        tasks.cancel_scope.cancel()


async def interleaved(calls: dict[str, Call], count: int) -> dict[str, tuple[list[int], int]]:
    """`count` calls of each, alternating one by one (so both meet the same machine), with
    per-call latencies (ns) and the process CPU (ns) each side's calls took."""
    latencies: dict[str, list[int]] = {side: [] for side in calls}
    cpu = dict.fromkeys(calls, 0)
    for _ in range(count):
        for side, call in calls.items():
            cpu_started = time.process_time_ns()
            started = time.perf_counter_ns()
            await call()
            latencies[side].append(time.perf_counter_ns() - started)
            cpu[side] += time.process_time_ns() - cpu_started
    return {side: (latencies[side], cpu[side]) for side in calls}


async def concurrent(call: Call, count: int) -> tuple[list[int], float]:
    """Per-call latencies (ns) with CONCURRENCY callers, and calls per second."""
    latencies: list[int] = []

    async def caller() -> None:
        for _ in range(count // CONCURRENCY):
            started = time.perf_counter_ns()
            await call()
            latencies.append(time.perf_counter_ns() - started)

    started = time.perf_counter()
    async with anyio.create_task_group() as tasks:
        for _ in range(CONCURRENCY):
            tasks.start_soon(caller)
    return latencies, len(latencies) / (time.perf_counter() - started)


async def transport_round(transport: str, calls: int, blocks: int) -> dict[str, float]:
    """One round over one transport: direct and pool measured in alternating blocks."""
    ctx = context()
    figures: dict[str, float] = {}
    with _urls(transport) as (direct_url, pool_url):
        config: StdioUpstream | HttpUpstream
        if pool_url is None:
            config = StdioUpstream(
                transport="stdio", command=ECHO[0], args=tuple(ECHO[1:]), cwd=str(ROOT), env=ENV
            )
        else:
            config = HttpUpstream(transport="streamable_http", url=pool_url)
        async with direct_client(direct_url) as client, pooled(config) as executor:
            arguments = {"n": 1}
            call_direct: Call = lambda: client.call_tool("echo", arguments)  # noqa: E731
            call_pool: Call = lambda: executor.call(ctx, ToolCall("echo__echo", arguments))  # noqa: E731
            sides = {"direct": call_direct, "pool": call_pool}
            await interleaved(sides, 50)  # warm both paths up
            lat: dict[str, list[int]] = {"direct": [], "pool": []}
            cpu: dict[str, int] = {"direct": 0, "pool": 0}
            con: dict[str, list[int]] = {"direct": [], "pool": []}
            rate: dict[str, list[float]] = {"direct": [], "pool": []}
            gc.collect()
            for side, (latencies, used) in (await interleaved(sides, calls)).items():
                lat[side] += latencies
                cpu[side] += used
            for block in range(blocks):
                order = ("direct", "pool") if block % 2 == 0 else ("pool", "direct")
                for side in order:
                    latencies, per_second = await concurrent(sides[side], calls // blocks)
                    con[side] += latencies
                    rate[side].append(per_second)
    for side in ("direct", "pool"):
        ordered = sorted(lat[side])
        figures[f"{side}_p50_ms"] = percentile(ordered, 0.5) / NS_PER_MS
        figures[f"{side}_p99_ms"] = percentile(ordered, 0.99) / NS_PER_MS
        figures[f"{side}_cpu_ms"] = cpu[side] / len(ordered) / NS_PER_MS
        ordered = sorted(con[side])
        figures[f"{side}_c32_p50_ms"] = percentile(ordered, 0.5) / NS_PER_MS
        figures[f"{side}_c32_rate"] = statistics.median(rate[side])
    figures["overhead_p50_ms"] = figures["pool_p50_ms"] - figures["direct_p50_ms"]
    figures["overhead_cpu_ms"] = figures["pool_cpu_ms"] - figures["direct_cpu_ms"]
    figures["overhead_c32_p50_ms"] = figures["pool_c32_p50_ms"] - figures["direct_c32_p50_ms"]
    return figures


@contextmanager
def _urls(transport: str) -> Iterator[tuple[str | None, str | None]]:
    if transport == "stdio":
        yield None, None
        return
    with http_echo() as direct_url, http_echo() as pool_url:
        yield direct_url, pool_url


async def startup(command: list[str], count: int) -> float:
    """Seconds from Pool.run() until all `count` upstreams are ready."""
    config = StdioUpstream(
        transport="stdio", command=command[0], args=tuple(command[1:]), cwd=str(ROOT), env=ENV
    )
    pool = Pool({f"u{index}": config for index in range(count)})
    started = time.perf_counter()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(pool.run)
        with anyio.fail_after(60):
            for connection in pool.connections.values():
                await connection.wait_ready()
        took = time.perf_counter() - started
        tasks.cancel_scope.cancel()
    return took


ROWS = [
    ("p50, one call after another", "p50_ms", "ms"),
    ("p99, one call after another", "p99_ms", "ms"),
    ("process CPU per call", "cpu_ms", "ms"),
    ("p50, 32 concurrent callers", "c32_p50_ms", "ms"),
    ("calls/s, 32 concurrent callers", "c32_rate", "/s"),
]


def _spread(values: Sequence[float]) -> str:
    return f"{figure(statistics.median(values))} ({figure(min(values))}-{figure(max(values))})"


def report(rounds: list[dict[str, Any]], args: argparse.Namespace) -> bool:
    print()
    verdicts: list[tuple[str, float, float, bool]] = []
    for transport in ("stdio", "http"):
        print(f"{transport}: direct SDK Client vs Pool + ToolService (median over rounds, spread)")
        for label, key, unit in ROWS:
            direct = [r[transport][f"direct_{key}"] for r in rounds]
            pool = [r[transport][f"pool_{key}"] for r in rounds]
            print(f"  {label:<34} {_spread(direct):>22} {unit:<3} {_spread(pool):>22} {unit}")
        for key, label in (
            ("overhead_p50_ms", "pool overhead p50, sequential"),
            ("overhead_cpu_ms", "pool overhead, CPU per call"),
            ("overhead_c32_p50_ms", "pool overhead p50, 32 concurrent"),
        ):
            values = [r[transport][key] for r in rounds]
            print(f"  {label:<34} {_spread(values):>22} ms")
        median = statistics.median(r[transport]["overhead_p50_ms"] for r in rounds)
        verdicts.append(
            (f"{transport} overhead p50", median, OVERHEAD_TARGET_MS, median < OVERHEAD_TARGET_MS)
        )
    tiny = [r["startup_tiny_s"] for r in rounds]
    sdk = [r["startup_sdk_s"] for r in rounds]
    print(f"20 stdio upstreams ready: tiny {_spread(tiny)} s; SDK echo {_spread(sdk)} s")
    median = statistics.median(tiny)
    verdicts.append(("20 upstreams ready", median, STARTUP_TARGET_S, median < STARTUP_TARGET_S))
    print()
    for name, value, target, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'} {name}: median {figure(value)} (target < {target:g})")
    passed = all(ok for *_, ok in verdicts)
    print(
        json.dumps(
            {
                "benchmark": "upstream_bench",
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "rounds": rounds,
                "calls": args.calls,
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "pass": passed,
            }
        )
    )
    return passed


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rounds: list[dict[str, Any]] = []
    for index in range(args.rounds):
        started = time.perf_counter()
        figures: dict[str, Any] = {}
        for transport in ("stdio", "http"):
            figures[transport] = await transport_round(transport, args.calls, 4)
        figures["startup_tiny_s"] = await startup(TINY, args.upstreams)
        figures["startup_sdk_s"] = await startup(ECHO, args.upstreams)
        rounds.append(figures)
        print(
            f"  round {index + 1}/{args.rounds}: overhead p50 stdio "
            f"{figures['stdio']['overhead_p50_ms']:.3f} ms, http "
            f"{figures['http']['overhead_p50_ms']:.3f} ms; {args.upstreams} ready in "
            f"{figures['startup_tiny_s']:.2f} s (SDK echo {figures['startup_sdk_s']:.2f} s) "
            f"({time.perf_counter() - started:.1f} s)",
            flush=True,
        )
    return rounds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.upstream_bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds to take medians over")
    parser.add_argument("--calls", type=int, default=2000, help="calls per side and mode")
    parser.add_argument("--upstreams", type=int, default=20, help="upstreams started at once")
    parser.add_argument("--quick", action="store_true", help="1 round of 400 calls")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.calls = 1, 400
    if not 1 <= args.rounds <= 50 or not 128 <= args.calls <= 100_000:
        parser.error("--rounds must be 1 to 50 and --calls 128 to 100,000")
    if not 1 <= args.upstreams <= 100:
        parser.error("--upstreams must be 1 to 100")
    # A SIGTERM unwinds like Ctrl-C, so every upstream child is reaped.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print(
        f"upstream_bench: {args.rounds} rounds; per round and transport {args.calls} calls per "
        f"side one after another and {args.calls} with {CONCURRENCY} callers; "
        f"{args.upstreams} upstreams at start-up; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    rounds = anyio.run(run, args)
    return 0 if report(rounds, args) else 1


if __name__ == "__main__":
    sys.exit(main())
