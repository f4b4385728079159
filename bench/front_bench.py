"""MCP front benchmark: the gateway's `/mcp` against the same upstream called directly, and
against a peer (FastMCP's proxy), side by side in one run.

Per round it starts, on 127.0.0.1, over stateful streamable HTTP:

- **upstream**: `bench/servers/wide.py` (SDK lowlevel `Server`, uvicorn) with `echo` and 50
  generated tools;
- **gateway**: `gateway serve` as a subprocess, on a temporary config: one API key, a tags
  directory granting the caller `up__*`, and the upstream as `up`;
- **peer**: FastMCP 3.4's proxy of the same upstream (`create_proxy(URL)`, which
  `FastMCP.as_proxy` is a deprecated alias of), served over streamable HTTP from its own
  venv (`bench/.peer-venv`, made with `python3 -m venv` and pip when missing).

and measures, with the SDK 2.3 `Client` as the load generator (`mode="auto"`, which picks
2026-07-28 where the server speaks it, and `mode="legacy"`, the handshake era), the three
targets round-robin in blocks (the order rotating block by block, so that machine noise
hits all alike):

1. `tools/call echo` (`up__echo` at the gateway) from 1, 8 and 32 concurrent clients
   (each its own `Client` and HTTP connection pool): p50 and p99 latency, calls per
   second, and the ratios to direct;
2. the CPU time per call of the gateway and of the peer process (and of the upstream, and
   of this process, the load generator), from /proc/<pid>/stat (utime + stime) and
   `time.process_time` before and after each block;
3. `tools/list` of 1,000 tools: 20 wide.py upstreams of 50 tools behind the gateway, for a
   caller whose tags grant a subset (globs and a denial: 480 tools) and for one granted
   everything (1,020 tools: each upstream's echo too), against one wide.py of 1,000
   tools listed directly; and the peer proxying the same 20 upstreams (an `mcpServers`
   config).

Each block of calls stops starting new ones after a few seconds (the peer's always do: it
opens a fresh upstream session for every call). The load generator's own garbage is
collected between timed lists, not during one. Connections idle for 2 s are closed by the
client, before uvicorn's 5 s keep-alive limit can race a request.

Targets, on the medians over the rounds, per client mode: gateway CPU per proxied
`tools/call` <= 1.0 ms; gateway p50 at 1 client <= 2.2 x direct; calls/s at 32 clients >=
45 % of direct; `tools/list` p50 <= 1.2 x direct (the filtered and the granted-all
caller). Exit 1 when one is missed, or when a call failed. This is not a test: the test
suite never asserts on time.

Run it with `bench/run front` (or `.venv/bin/python -m bench.front_bench`): 3 rounds of both
modes take ~9 minutes here; `--quick` (1 round, small blocks, modern mode only) ~1.5.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import json
import os
import platform
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx2
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from bench.measure import NS_PER_MS, figure, percentile

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
GATEWAY = Path(sys.executable).parent / "gateway"
PEER_VENV = ROOT / "bench" / ".peer-venv"
PEER_SPEC = "fastmcp>=3.4,<3.5"
RESULTS = ROOT / "bench" / "results"
TICKS_PER_S = os.sysconf("SC_CLK_TCK")

CONCURRENCY = (1, 8, 32)
TARGETS = ("direct", "gateway", "peer")
LIST_TARGETS = ("direct", "gateway_filtered", "gateway_all", "peer")
MODES: dict[str, Literal["auto", "legacy"]] = {"modern": "auto", "legacy": "legacy"}
CALL_TOOLS = 50
"""Generated tools of the upstream behind the call measurements (besides echo)."""
LIST_UPSTREAMS = 20
LIST_TOOLS_EACH = 50
ARGUMENTS = {"text": "hello from the front benchmark", "n": 7}
FILTERED_ALLOW = ["u*__tool_00*", "u*__tool_01*", "u0*__tool_02*"]
FILTERED_DENY = ["*__tool_013"]
FILTERED_COUNT = 480
"""Tools the filtered caller sees: 20 x 20 (tool_000-019) + 10 x 10 (u0*: tool_020-029),
less tool_013 of each upstream."""

CPU_TARGET_MS = 1.0
P50_RATIO_TARGET = 2.2
RATE_RATIO_TARGET = 0.45
LIST_RATIO_TARGET = 1.2


@dataclass(frozen=True, slots=True)
class Size:
    """How much to measure per round."""

    blocks: int
    """Blocks per target, per (mode, concurrency); the order rotates block by block."""
    calls: dict[int, int]
    """tools/call per block and target, by concurrency."""
    block_seconds: float
    """A block stops starting calls after this long (the peer's blocks usually do)."""
    lists: int
    list_seconds: float


FULL = Size(2, {1: 120, 8: 240, 32: 384}, 2.5, 12, 2.0)
QUICK = Size(2, {1: 40, 8: 80, 32: 128}, 1.0, 4, 1.0)


# Processes ----------------------------------------------------------------------------


def pick_port(taken: set[int]) -> int:
    """A free 127.0.0.1 port below the ephemeral range (32768-60999), so that none of the
    many outgoing connections of a run can be given it before its server binds it."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError("no free port found in 20000-32000")


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in text[-lines:])


@dataclass
class Children:
    """Child processes of one setup, every one reaped on the way out, failure or not."""

    logs: Path
    ports: set[int] = field(default_factory=set)
    started: list[Child] = field(default_factory=list)

    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str], cwd: Path) -> Child:
        port = pick_port(self.ports)
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [arg.replace("{port}", str(port)) for arg in argv],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        child = Child(name, process, log, port)
        self.started.append(child)
        return child

    def reap(self) -> None:
        for child in self.started:
            if child.process.poll() is None:
                child.process.terminate()
        deadline = time.monotonic() + 5
        for child in self.started:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait(timeout=5)
        self.started.clear()


@contextmanager
def children(logs: Path) -> Iterator[Children]:
    group = Children(logs)
    try:
        yield group
    finally:
        group.reap()


def wait_listening(child: Child, deadline: float) -> None:
    while True:
        try:
            socket.create_connection(("127.0.0.1", child.port), timeout=0.2).close()
            return
        except OSError:
            if child.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} did not start:\n{child.tail()}") from None
            time.sleep(0.05)


def wait_gateway(child: Child, upstreams: int, deadline: float) -> None:
    """Until /health counts every upstream ready, `upstreams` of them at least (the
    gateway's own tools are one more, in process, since issue 19; the gateway listens
    only after its pool's first attempts, so this rarely waits)."""
    wait_listening(child, deadline)
    url = f"http://127.0.0.1:{child.port}/health"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                health = json.load(response)
            counts = health.get("upstreams", {})
            if set(counts) == {"ready"} and counts["ready"] >= upstreams:
                return
        except OSError:
            pass
        if child.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{child.name} did not get ready:\n{child.tail()}")
        time.sleep(0.1)


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (/proc/<pid>/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def ticks_ms(ticks: int) -> float:
    return ticks * 1000 / TICKS_PER_S


# The peer ------------------------------------------------------------------------------

PEER_SCRIPT = '''"""FastMCP's proxy, for bench/front_bench.py: python peer.py PORT TARGET_JSON."""
import json
import sys

from fastmcp.server import create_proxy  # FastMCP.as_proxy is a deprecated alias

proxy = create_proxy(json.loads(sys.argv[2]), name="peer")
proxy.run(
    transport="http",
    host="127.0.0.1",
    port=int(sys.argv[1]),
    path="/mcp",
    log_level="warning",
    show_banner=False,
)
'''


def peer_versions(python: Path) -> dict[str, str] | None:
    if not python.exists():
        return None
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import json; from importlib.metadata import version as v; "
            "print(json.dumps({p: v(p) for p in ('fastmcp', 'mcp', 'uvicorn')}))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:
        return None
    versions: dict[str, str] = json.loads(probe.stdout)
    return versions


def ensure_peer(venv: Path) -> tuple[Path, dict[str, str]]:
    """The peer venv's python and its versions, creating the venv when missing."""
    python = venv / "bin" / "python"
    versions = peer_versions(python)
    if versions is None or not versions["fastmcp"].startswith("3.4."):
        print(f"front_bench: installing {PEER_SPEC} into {venv} (once)", flush=True)
        if not python.exists():
            subprocess.run(["python3", "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                PEER_SPEC,
            ],
            check=True,
            timeout=1200,
        )
        versions = peer_versions(python)
        if versions is None:
            raise RuntimeError(f"fastmcp did not install into {venv}")
    return python, versions


# Configuration -------------------------------------------------------------------------


def write_gateway(
    directory: Path, upstreams: dict[str, int], tags: list[dict[str, Any]]
) -> dict[str, str]:
    """A gateway config in `directory`; returns an API key per user of the tags."""
    users = sorted({user for tag in tags for user in tag["users"]})
    keys = {user: f"bench-{user}-{secrets.token_urlsafe(18)}" for user in users}
    (directory / "orgs").mkdir(parents=True)
    org: dict[str, Any] = {
        "org": "benchorg",
        "users": {user: {"roles": [f"{user}_role"]} for user in users},
        "tags": [
            {
                "tag": tag["name"],
                "kind": "tool",
                "payload": {
                    "config": {
                        "assigned_roles": [f"{user}_role" for user in tag["users"]],
                        "allowed_tools": tag["allow"],
                        "denied_tools": tag.get("deny", []),
                    }
                },
            }
            for tag in tags
        ],
    }
    config = {
        "auth": {
            "api_keys": [
                {
                    "user": user,
                    "org": "benchorg",
                    "sha256": hashlib.sha256(key.encode()).hexdigest(),
                    "label": f"{user}-bench",
                }
                for user, key in keys.items()
            ]
        },
        "tags": {"dir": "orgs"},
        "upstreams": {
            name: {"transport": "streamable_http", "url": f"http://127.0.0.1:{port}/mcp"}
            for name, port in upstreams.items()
        },
    }
    # JSON is YAML: no quoting to get wrong.
    (directory / "orgs" / "benchorg.yaml").write_text(json.dumps(org, indent=1))
    (directory / "gateway.yaml").write_text(json.dumps(config, indent=1))
    return keys


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    tool: str
    headers: dict[str, str] = field(default_factory=dict)
    pid: int | None = None
    """The proxy process whose CPU the target's calls cost (none for direct)."""


MAIN_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def start_wide(group: Children, name: str, tools: int) -> Child:
    return group.spawn(
        name, [PYTHON, "-m", "bench.servers.wide", "{port}", str(tools)], MAIN_ENV, ROOT
    )


def start_gateway(group: Children, directory: Path) -> Child:
    argv = [str(GATEWAY), "serve", "--config", str(directory / "gateway.yaml"), "--port", "{port}"]
    return group.spawn("gateway", argv, MAIN_ENV, ROOT)


def start_peer(group: Children, peer_python: Path, directory: Path, target: Any) -> Child:
    script = directory / "peer.py"
    script.write_text(PEER_SCRIPT)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "VIRTUAL_ENV"))
    }
    env["FASTMCP_SHOW_SERVER_BANNER"] = "false"
    argv = [str(peer_python), str(script), "{port}", json.dumps(target)]
    return group.spawn("peer", argv, env, directory)


# Load ----------------------------------------------------------------------------------


@asynccontextmanager
async def connect(target: Target, mode: Literal["auto", "legacy"]) -> AsyncIterator[Client]:
    timeout = httpx2.Timeout(30, read=None)
    # uvicorn closes a connection idle for 5 s, httpx's default expiry: a request sent on
    # it just then fails (ReadError) and takes the Client down. Expire idle ones sooner.
    limits = httpx2.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=2)
    async with (
        httpx2.AsyncClient(headers=target.headers, timeout=timeout, limits=limits) as http,
        Client(streamable_http_client(target.url, http_client=http), cache=None, mode=mode) as c,
    ):
        yield c


@dataclass
class Tally:
    """What one target's blocks gave in one round, for one (mode, concurrency)."""

    latencies: list[int] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    proxy_ticks: int = 0
    upstream_ticks: int = 0
    client_ns: int = 0

    @property
    def calls(self) -> int:
        return len(self.latencies)


class Meter:
    """CPU of the processes involved, read before and after a block."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def read(self) -> tuple[dict[str, int], int]:
        return {name: cpu_ticks(pid) for name, pid in self.pids.items()}, time.process_time_ns()


async def call_block(
    target: Target, clients: list[Client], calls: int, seconds: float, tally: Tally
) -> None:
    """`calls` tools/call spread over `clients`, each client one call after another; no
    new call starts after `seconds`."""
    per_client = max(1, calls // len(clients))
    deadline = time.perf_counter() + seconds

    async def worker(client: Client) -> None:
        for _ in range(per_client):
            if time.perf_counter() > deadline:
                return
            started = time.perf_counter_ns()
            try:
                result = await client.call_tool(target.tool, ARGUMENTS)
            except MCPError:
                tally.errors += 1
                continue
            if result.is_error:
                tally.errors += 1
                continue
            tally.latencies.append(time.perf_counter_ns() - started)

    started = time.perf_counter()
    with anyio.fail_after(seconds + 120):
        async with anyio.create_task_group() as tasks:
            for client in clients:
                tasks.start_soon(worker, client)
    tally.seconds += time.perf_counter() - started


async def measured(
    meter: Meter, target: Target, upstream: str | None, tally: Tally, block: Awaitable[object]
) -> None:
    before, client_before = meter.read()
    await block
    after, client_after = meter.read()
    if target.pid is not None:
        proxy = next(name for name, pid in meter.pids.items() if pid == target.pid)
        tally.proxy_ticks += after[proxy] - before[proxy]
    if upstream is not None:
        tally.upstream_ticks += after[upstream] - before[upstream]
    tally.client_ns += client_after - client_before


def order(block: int, names: Sequence[str]) -> list[str]:
    """The targets in round-robin order, rotated by one each block."""
    shift = block % len(names)
    return [*names[shift:], *names[:shift]]


def call_figures(tally: Tally) -> dict[str, float]:
    ordered = sorted(tally.latencies)
    calls = max(1, tally.calls)
    return {
        "p50_ms": percentile(ordered, 0.5) / NS_PER_MS if ordered else float("nan"),
        "p99_ms": percentile(ordered, 0.99) / NS_PER_MS if ordered else float("nan"),
        "rate": tally.calls / tally.seconds if tally.seconds else 0.0,
        "calls": tally.calls,
        "errors": tally.errors,
        "proxy_cpu_ms": ticks_ms(tally.proxy_ticks) / calls,
        "upstream_cpu_ms": ticks_ms(tally.upstream_ticks) / calls,
        "client_cpu_ms": tally.client_ns / calls / NS_PER_MS,
    }


async def call_phase(
    targets: dict[str, Target], meter: Meter, size: Size, modes: Sequence[str]
) -> dict[str, Any]:
    """tools/call at each concurrency, per client mode; figures per target."""
    figures: dict[str, Any] = {}
    for mode in modes:
        per_mode: dict[str, Any] = {"protocol": {}, "calls": {}, "all": {}}
        async with AsyncExitStack() as stack:
            clients: dict[str, list[Client]] = {}
            for name, target in targets.items():
                clients[name] = [
                    await stack.enter_async_context(connect(target, MODES[mode]))
                    for _ in range(max(CONCURRENCY))
                ]
                per_mode["protocol"][name] = clients[name][0].protocol_version
                listed = await clients[name][0].list_tools()
                if not any(tool.name == target.tool for tool in listed.tools):
                    raise RuntimeError(f"{name} does not list {target.tool}")
                warm = Tally()  # one call per client, not counted
                await call_block(target, clients[name], max(CONCURRENCY), 60, warm)
                if warm.errors:
                    raise RuntimeError(f"{name}: {warm.errors} warm-up calls failed")
            totals = {name: Tally() for name in targets}
            for concurrency in CONCURRENCY:
                tallies = {name: Tally() for name in targets}
                for block in range(size.blocks):
                    for name in order(block, list(targets)):
                        target = targets[name]
                        work = call_block(
                            target,
                            clients[name][:concurrency],
                            size.calls[concurrency],
                            size.block_seconds,
                            tallies[name],
                        )
                        await measured(meter, target, "upstream", tallies[name], work)
                per_mode["calls"][str(concurrency)] = {
                    name: call_figures(tally) for name, tally in tallies.items()
                }
                for name, tally in tallies.items():
                    total = totals[name]
                    total.latencies += tally.latencies
                    total.errors += tally.errors
                    total.proxy_ticks += tally.proxy_ticks
                    total.upstream_ticks += tally.upstream_ticks
                    total.client_ns += tally.client_ns
            for name, total in totals.items():
                all_figures = call_figures(total)
                per_mode["all"][name] = {
                    key: all_figures[key]
                    for key in ("calls", "errors", "proxy_cpu_ms", "upstream_cpu_ms")
                } | {"client_cpu_ms": all_figures["client_cpu_ms"]}
        figures[mode] = per_mode
    return figures


async def list_block(client: Client, lists: int, seconds: float, tally: Tally) -> int:
    """`lists` tools/list one after another (fewer if `seconds` pass); the tool count."""
    deadline = time.perf_counter() + seconds
    count = 0
    started = time.perf_counter()
    with anyio.fail_after(seconds + 120):
        for _ in range(lists):
            if time.perf_counter() > deadline:
                break
            # A thousand tools make garbage: collect this process's between lists, not
            # while one is timed (the servers' collections are part of what is measured).
            gc.collect()
            gc.disable()
            try:
                begun = time.perf_counter_ns()
                result = await client.list_tools()
                tally.latencies.append(time.perf_counter_ns() - begun)
            finally:
                gc.enable()
            count = len(result.tools)
            del result
    tally.seconds += time.perf_counter() - started
    return count


async def list_phase(
    targets: dict[str, Target],
    meter: Meter,
    size: Size,
    modes: Sequence[str],
    expected: dict[str, int],
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for mode in modes:
        per_mode: dict[str, Any] = {"protocol": {}, "lists": {}}
        async with AsyncExitStack() as stack:
            clients = {
                name: await stack.enter_async_context(connect(target, MODES[mode]))
                for name, target in targets.items()
            }
            tools: dict[str, int] = {}
            for name, client in clients.items():
                per_mode["protocol"][name] = client.protocol_version
                tools[name] = await list_block(client, 1, 60, Tally())  # warm-up
                if tools[name] != expected[name]:
                    raise RuntimeError(f"{name} lists {tools[name]} tools, not {expected[name]}")
            tallies = {name: Tally() for name in targets}
            for block in range(size.blocks):
                for name in order(block, list(targets)):
                    target = targets[name]
                    upstream = "direct_upstream" if name == "direct" else None
                    work = list_block(clients[name], size.lists, size.list_seconds, tallies[name])
                    await measured(meter, target, upstream, tallies[name], work)
            for name, tally in tallies.items():
                ordered = sorted(tally.latencies)
                per_mode["lists"][name] = {
                    "p50_ms": percentile(ordered, 0.5) / NS_PER_MS,
                    "mean_ms": statistics.fmean(ordered) / NS_PER_MS,
                    "p99_ms": percentile(ordered, 0.99) / NS_PER_MS,
                    "lists": tally.calls,
                    "tools": tools[name],
                    "proxy_cpu_ms": ticks_ms(tally.proxy_ticks) / max(1, tally.calls),
                    "upstream_cpu_ms": ticks_ms(tally.upstream_ticks) / max(1, tally.calls),
                    "client_cpu_ms": tally.client_ns / max(1, tally.calls) / NS_PER_MS,
                }
        figures[mode] = per_mode
    return figures


# Rounds --------------------------------------------------------------------------------


async def call_round(
    work: Path, peer_python: Path | None, size: Size, modes: Sequence[str]
) -> dict[str, Any]:
    (work / "logs").mkdir(parents=True)
    with children(work / "logs") as group:
        upstream = start_wide(group, "upstream", CALL_TOOLS)
        wait_listening(upstream, time.monotonic() + 30)
        keys = write_gateway(
            work / "gateway",
            {"up": upstream.port},
            [{"name": "bench_tools", "users": ["bench"], "allow": ["up__*"]}],
        )
        gateway = start_gateway(group, work / "gateway")
        peer = None
        if peer_python is not None:
            peer = start_peer(group, peer_python, work, f"http://127.0.0.1:{upstream.port}/mcp")
        wait_gateway(gateway, 1, time.monotonic() + 60)
        if peer is not None:
            wait_listening(peer, time.monotonic() + 60)
        url = "http://127.0.0.1:{}/mcp"
        targets = {
            "direct": Target("direct", url.format(upstream.port), "echo"),
            "gateway": Target(
                "gateway",
                url.format(gateway.port),
                "up__echo",
                {"Authorization": f"Bearer {keys['bench']}"},
                gateway.pid,
            ),
        }
        pids = {"upstream": upstream.pid, "gateway": gateway.pid}
        if peer is not None:
            targets["peer"] = Target("peer", url.format(peer.port), "echo", {}, peer.pid)
            pids["peer"] = peer.pid
        try:
            return await call_phase(targets, Meter(pids), size, modes)
        except BaseException:
            for child in group.started:
                print(f"  {child.name} log ({child.log}):\n{child.tail()}", file=sys.stderr)
            raise


async def list_round(
    work: Path, peer_python: Path | None, size: Size, modes: Sequence[str]
) -> dict[str, Any]:
    (work / "logs").mkdir(parents=True)
    with children(work / "logs") as group:
        names = [f"u{index:02d}" for index in range(LIST_UPSTREAMS)]
        upstreams = {name: start_wide(group, name, LIST_TOOLS_EACH) for name in names}
        direct = start_wide(group, "direct", LIST_UPSTREAMS * LIST_TOOLS_EACH)
        deadline = time.monotonic() + 90  # 21 SDK imports on 2 cores: ~15 s
        for child in [*upstreams.values(), direct]:
            wait_listening(child, deadline)
        keys = write_gateway(
            work / "gateway",
            {name: child.port for name, child in upstreams.items()},
            [
                {
                    "name": "some_tools",
                    "users": ["bench"],
                    "allow": FILTERED_ALLOW,
                    "deny": FILTERED_DENY,
                },
                {"name": "all_tools", "users": ["admin"], "allow": ["*"]},
            ],
        )
        gateway = start_gateway(group, work / "gateway")
        peer = None
        if peer_python is not None:
            servers = {
                name: {"url": f"http://127.0.0.1:{child.port}/mcp", "transport": "http"}
                for name, child in upstreams.items()
            }
            peer = start_peer(group, peer_python, work, {"mcpServers": servers})
        wait_gateway(gateway, LIST_UPSTREAMS, time.monotonic() + 60)
        if peer is not None:
            wait_listening(peer, time.monotonic() + 60)
        url = "http://127.0.0.1:{}/mcp"
        targets = {
            "direct": Target("direct", url.format(direct.port), ""),
            "gateway_filtered": Target(
                "gateway_filtered",
                url.format(gateway.port),
                "",
                {"Authorization": f"Bearer {keys['bench']}"},
                gateway.pid,
            ),
            "gateway_all": Target(
                "gateway_all",
                url.format(gateway.port),
                "",
                {"Authorization": f"Bearer {keys['admin']}"},
                gateway.pid,
            ),
        }
        pids = {"direct_upstream": direct.pid, "gateway": gateway.pid}
        if peer is not None:
            targets["peer"] = Target("peer", url.format(peer.port), "", {}, peer.pid)
            pids["peer"] = peer.pid
        try:
            everything = LIST_UPSTREAMS * (LIST_TOOLS_EACH + 1)  # each upstream's echo too
            expected = {
                "direct": LIST_UPSTREAMS * LIST_TOOLS_EACH + 1,
                "gateway_filtered": FILTERED_COUNT,
                "gateway_all": everything,
                "peer": everything,
            }
            return await list_phase(targets, Meter(pids), size, modes, expected)
        except BaseException:
            for child in group.started:
                if child.process.poll() is not None or child.name in ("gateway", "peer"):
                    print(f"  {child.name} log ({child.log}):\n{child.tail()}", file=sys.stderr)
            raise


async def run(args: argparse.Namespace, peer_python: Path | None) -> list[dict[str, Any]]:
    size = QUICK if args.quick else FULL
    rounds: list[dict[str, Any]] = []
    with anyio.fail_after(args.rounds * 600 + 300):  # a bound on everything, whatever hangs
        for index in range(args.rounds):
            started = time.perf_counter()
            loop_s = calibration()
            with tempfile.TemporaryDirectory(prefix="front-bench-") as tmp:
                work = Path(tmp)
                calls = await call_round(work / "calls", peer_python, size, args.modes)
                middle = time.perf_counter()
                lists = await list_round(work / "lists", peer_python, size, args.modes)
            took = (middle - started, time.perf_counter() - middle)
            rounds.append({"calls": calls, "lists": lists, "calibration_s": loop_s})
            print(
                f"  round {index + 1}/{args.rounds}: {_summary(calls, lists)} "
                f"(calls {took[0]:.0f} s, lists {took[1]:.0f} s; calibration loop {loop_s:.2f} s)",
                flush=True,
            )
    return rounds


def calibration() -> float:
    """CPU seconds of a fixed pure-Python loop: how fast this shared machine is today
    (it varies by tens of percent from hour to hour), to compare runs by."""
    started = time.process_time()
    total = 0
    for value in range(3_000_000):
        total += value
    return time.process_time() - started


def _summary(calls: dict[str, Any], lists: dict[str, Any]) -> str:
    mode = next(iter(calls))
    one = calls[mode]["calls"]["1"]
    parts = [
        f"{mode}: gateway CPU {calls[mode]['all']['gateway']['proxy_cpu_ms']:.2f} ms/call",
        f"p50 direct {one['direct']['p50_ms']:.2f} gateway {one['gateway']['p50_ms']:.2f}",
    ]
    if "peer" in one:
        parts.append(f"peer {one['peer']['p50_ms']:.2f} ms")
    listed = lists[mode]["lists"]
    parts.append(
        f"tools/list direct {listed['direct']['p50_ms']:.1f} "
        f"gateway {listed['gateway_all']['p50_ms']:.1f} ms"
    )
    return "; ".join(parts)


# Report --------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _spread(values: Sequence[float]) -> str:
    if len(values) == 1:
        return figure(values[0])
    return f"{figure(_median(values))} ({figure(min(values))}-{figure(max(values))})"


@dataclass(frozen=True)
class Verdict:
    name: str
    value: float
    target: str
    met: bool


def report(rounds: list[dict[str, Any]], args: argparse.Namespace, meta: dict[str, Any]) -> bool:
    verdicts: list[Verdict] = []
    errors = 0
    targets = [t for t in TARGETS if t in rounds[0]["calls"][args.modes[0]]["all"]]
    for mode in args.modes:
        protocols = rounds[0]["calls"][mode]["protocol"]
        print()
        print(
            f"tools/call echo, client mode {MODES[mode]!r} (protocol: "
            + ", ".join(f"{t} {protocols[t]}" for t in targets)
            + f"); medians over {len(rounds)} rounds (spread)"
        )
        print(
            f"  {'clients':>7} {'target':<8} {'p50 ms':>20} {'p99 ms':>20} {'calls/s':>20}"
            f" {'p50 / direct':>18} {'calls/s / direct':>18}"
        )
        for concurrency in CONCURRENCY:
            key = str(concurrency)
            for target in targets:
                series = [r["calls"][mode]["calls"][key][target] for r in rounds]
                errors += sum(int(s["errors"]) for s in series)
                p50 = [s["p50_ms"] for s in series]
                p99 = [s["p99_ms"] for s in series]
                rate = [s["rate"] for s in series]
                line = f"  {concurrency:>7} {target:<8} {_spread(p50):>20} {_spread(p99):>20}"
                line += f" {_spread(rate):>20}"
                if target != "direct":
                    direct = [r["calls"][mode]["calls"][key]["direct"] for r in rounds]
                    p50_ratio = [
                        s["p50_ms"] / d["p50_ms"] for s, d in zip(series, direct, strict=True)
                    ]
                    rate_ratio = [
                        s["rate"] / d["rate"] for s, d in zip(series, direct, strict=True)
                    ]
                    line += f" {_spread(p50_ratio):>18} {_spread(rate_ratio):>18}"
                    if target == "gateway" and concurrency == 1:
                        value = _median(p50_ratio)
                        verdicts.append(
                            Verdict(
                                f"{mode}: gateway p50 vs direct, 1 client",
                                value,
                                f"<= {P50_RATIO_TARGET:g}x",
                                value <= P50_RATIO_TARGET,
                            )
                        )
                    if target == "gateway" and concurrency == max(CONCURRENCY):
                        value = _median(rate_ratio)
                        verdicts.append(
                            Verdict(
                                f"{mode}: gateway calls/s vs direct, {concurrency} clients",
                                value,
                                f">= {RATE_RATIO_TARGET:g}",
                                value >= RATE_RATIO_TARGET,
                            )
                        )
                print(line)
        print("  CPU per call, ms (all blocks of this mode), median (spread):")
        print(f"  {'target':<8} {'proxy process':>20} {'upstream':>20} {'load generator':>20}")
        for target in targets:
            series = [r["calls"][mode]["all"][target] for r in rounds]
            proxy = [s["proxy_cpu_ms"] for s in series]
            upstream = [s["upstream_cpu_ms"] for s in series]
            client = [s["client_cpu_ms"] for s in series]
            proxy_text = "" if target == "direct" else _spread(proxy)
            print(f"  {target:<8} {proxy_text:>20} {_spread(upstream):>20} {_spread(client):>20}")
            if target == "gateway":
                value = _median(proxy)
                verdicts.append(
                    Verdict(
                        f"{mode}: gateway CPU per proxied tools/call",
                        value,
                        f"<= {CPU_TARGET_MS:g} ms",
                        value <= CPU_TARGET_MS,
                    )
                )
    for mode in args.modes:
        listed = rounds[0]["lists"][mode]
        names = [t for t in LIST_TARGETS if t in listed["lists"]]
        print()
        print(
            f"tools/list, client mode {MODES[mode]!r} (protocol: "
            + ", ".join(f"{t} {listed['protocol'][t]}" for t in names)
            + f"); medians over {len(rounds)} rounds (spread)"
        )
        print(
            f"  {'target':<17} {'tools':>5} {'p50 ms':>20} {'mean ms':>20} {'p99 ms':>20}"
            f" {'p50 / direct':>18} {'mean / direct':>18} {'server CPU ms/list':>20}"
        )
        for name in names:
            series = [r["lists"][mode]["lists"][name] for r in rounds]
            direct = [r["lists"][mode]["lists"]["direct"] for r in rounds]
            p50 = [s["p50_ms"] for s in series]
            mean = [s["mean_ms"] for s in series]
            p99 = [s["p99_ms"] for s in series]
            line = f"  {name:<17} {series[0]['tools']:>5} {_spread(p50):>20} {_spread(mean):>20}"
            line += f" {_spread(p99):>20}"
            server = [s["upstream_cpu_ms" if name == "direct" else "proxy_cpu_ms"] for s in series]
            if name == "direct":
                line += f" {'':>18} {'':>18} {_spread(server):>20}"
            else:
                ratio = [s["p50_ms"] / d["p50_ms"] for s, d in zip(series, direct, strict=True)]
                means = [s["mean_ms"] / d["mean_ms"] for s, d in zip(series, direct, strict=True)]
                line += f" {_spread(ratio):>18} {_spread(means):>18} {_spread(server):>20}"
                if name.startswith("gateway"):
                    value = _median(ratio)
                    verdicts.append(
                        Verdict(
                            f"{mode}: tools/list p50 vs direct, {name.split('_')[1]}",
                            value,
                            f"<= {LIST_RATIO_TARGET:g}x",
                            value <= LIST_RATIO_TARGET,
                        )
                    )
            print(line)
    print()
    for verdict in verdicts:
        print(
            f"{'met   ' if verdict.met else 'MISSED'} {verdict.name}: median "
            f"{figure(verdict.value)} (target {verdict.target})"
        )
    if errors:
        print(f"MISSED {errors} tools/call failed (see the JSON for where)")
    passed = all(v.met for v in verdicts) and not errors
    result = {
        "benchmark": "front_bench",
        **meta,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "modes": args.modes,
        "rounds": rounds,
        "verdicts": [vars(v) for v in verdicts],
        "errors": errors,
        "pass": passed,
    }
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    path = RESULTS / f"front_bench-{stamp}.json"
    path.write_text(json.dumps(result, indent=1, allow_nan=False, default=str))
    print(f"results: {path.relative_to(ROOT)}")
    return passed


def machine(peer: dict[str, str] | None) -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "mcp": version("mcp"),
        "peer": peer,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.front_bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds to take medians over")
    parser.add_argument(
        "--quick", action="store_true", help="1 round of small blocks, modern mode only"
    )
    parser.add_argument(
        "--modes",
        help="client modes, comma-separated: modern (mode='auto'), legacy; "
        "default both (--quick: modern)",
    )
    parser.add_argument(
        "--peer-venv", type=Path, default=PEER_VENV, help="the FastMCP venv (made if missing)"
    )
    parser.add_argument("--no-peer", action="store_true", help="measure without the peer")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 1
    if args.modes is None:
        args.modes = "modern" if args.quick else "modern,legacy"
    args.modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    if not args.modes or any(mode not in MODES for mode in args.modes):
        parser.error(f"--modes takes {', '.join(MODES)}")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be 1 to 20")
    if not GATEWAY.exists():
        parser.error(f"{GATEWAY} is missing: run through bench/run, which installs it")
    # A SIGTERM unwinds like Ctrl-C, so every child is reaped.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    peer_python: Path | None = None
    peer: dict[str, str] | None = None
    if not args.no_peer:
        peer_python, peer = ensure_peer(args.peer_venv)
    meta = machine(peer)
    print(
        f"front_bench: {args.rounds} rounds, modes {', '.join(args.modes)}; {meta['cpus']} CPUs "
        f"({meta['cpu_model']}), Python {meta['python']}, mcp {meta['mcp']}"
        + (f"; peer fastmcp {peer['fastmcp']} (mcp {peer['mcp']})" if peer else "; no peer"),
        flush=True,
    )
    rounds = anyio.run(run, args, peer_python)
    return 0 if report(rounds, args, meta) else 1


if __name__ == "__main__":
    sys.exit(main())
