"""The SSE benchmark's rig: its child processes (gateways and client processes), the
gateways' configuration, the sessions they hold, and what is read off the processes and
off Redis (RSS, CPU, the machine's busy time, `INFO`).

Every child leads its own process group, dies with the benchmark (Linux's parent-death
signal) and is reaped however the benchmark ends (`children`); every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import httpx2
from redis.asyncio import Redis

from bench import front_bench
from bench.sse_clients import ClientSpec, read_json, write_json
from gateway.state.base import StateStore, Stream
from tests.redis_server import _die_with_parent, free_port

ROOT: Final = Path(__file__).resolve().parent.parent
PYTHON: Final = sys.executable

KEY: Final = "bench-sse-key-alice-0001"
AUTH: Final = {"Authorization": f"Bearer {KEY}"}
ORG_YAML: Final = """
users:
  alice: {roles: [support]}
tags:
  - tag: support
    kind: role
    payload:
      content: You help customers with their orders.
      config: {assigned_roles: [support]}
"""
SCRIPT: Final = [
    {"kind": "clarify", "confidence": 0.9, "reasoning": "bench", "question": "Which order?"}
]

GATEWAY_START_TIMEOUT: Final = 30.0
SESSIONS_TIMEOUT: Final = 60.0
"""For creating every session and seeing each wait (`input_required`)."""
OPEN_TIMEOUT: Final = 60.0
"""For every SSE connection to have its snapshot frame."""
CLIENT_EXIT_TIMEOUT: Final = 20.0
STOP_TIMEOUT: Final = 5.0
POLL: Final = 0.02

# --------------------------------------------------------------------------------------
# Processes


@dataclass
class Child(front_bench.Child):
    """A child process (its pid, log and tail as the front benchmark's), with the base URL
    of what it serves (port 0: it serves nothing) and what it logged."""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def problems(self, since: int = 0) -> list[str]:
        """What it logged at WARNING or above (after the first `since` bytes)."""
        try:
            with self.log.open("rb") as log:
                log.seek(since)
                text = log.read().decode(errors="replace").splitlines()
        except OSError:
            return []
        marks = ("WARNING", "ERROR", "CRITICAL", "Traceback")
        return [f"{self.name}: {line}" for line in text if any(m in line for m in marks)]


@dataclass
class Children:
    """Child processes, each leading its own process group; all reaped on the way out."""

    logs: Path
    started: list[Child] = field(default_factory=list)

    def spawn(self, name: str, argv: Sequence[str], port: int = 0) -> Child:
        log = self.logs / f"{name}.log"
        env = {
            k: v for k, v in os.environ.items() if k not in ("GATEWAY_CONFIG", "GATEWAY_STATE_URL")
        }
        env |= {"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
        with log.open("wb") as out:
            process = subprocess.Popen(
                list(argv),
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # no child outlives a benchmark killed outright
            )
        child = Child(name, process, log, port)
        self.started.append(child)
        return child

    def stop(self, child: Child) -> None:
        """SIGTERM to its group, SIGKILL after STOP_TIMEOUT; reaped."""
        _signal_group(child, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(timeout=STOP_TIMEOUT)
        _signal_group(child, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(timeout=STOP_TIMEOUT)

    def reap(self) -> None:
        """SIGTERM to every group, then SIGKILL to what is left after STOP_TIMEOUT."""
        for child in self.started:
            _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            _signal_group(child, signal.SIGKILL)  # its children too, if it left any
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=STOP_TIMEOUT)
        self.started.clear()


def _signal_group(child: Child, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signum)


@contextlib.contextmanager
def children(logs: Path) -> Iterator[Children]:
    group = Children(logs)
    try:
        yield group
    finally:
        group.reap()


# --------------------------------------------------------------------------------------
# Gateways, their sessions and the events appended to them


def write_config(directory: Path, name: str, redis_url: str) -> Path:
    """A gateway.yaml for one gateway (its own data_dir); the tags and script shared."""
    (directory / "orgs").mkdir(exist_ok=True)
    (directory / "orgs" / "acme.yaml").write_text(ORG_YAML)
    (directory / "script.yaml").write_text(json.dumps(SCRIPT))
    config = {
        "data_dir": str(directory / f"data-{name}"),
        "auth": {"dev": True, "api_keys": [{"user": "alice", "org": "acme", "key": KEY}]},
        "tags": {"dir": "orgs", "watch": False},
        "state": {"url": redis_url},
        "engine": {"planner": "scripted", "script": "script.yaml", "recover": False},
    }
    path = directory / f"gateway-{name}.yaml"
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    return path


def start_gateway(group: Children, directory: Path, name: str, redis_url: str) -> Child:
    config = write_config(directory, name, redis_url)
    port = free_port()
    argv = [PYTHON, "-m", "gateway.cli", "serve", "--config", str(config)]
    return group.spawn(f"gateway-{name}", [*argv, "--host", "127.0.0.1", "--port", str(port)], port)


def wait_ready(child: Child) -> None:
    """Until its /readyz answers 200 (its state store is ready); bounded."""
    deadline = time.monotonic() + GATEWAY_START_TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(f"{child.base}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            pass
        if child.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{child.name} did not get ready:\n{child.tail()}")
        time.sleep(0.1)


async def create_sessions(http: httpx2.AsyncClient, base: str, count: int) -> list[str]:
    """`count` sessions started on `base`, once each is waiting (input_required)."""
    ids = []
    with anyio.fail_after(SESSIONS_TIMEOUT):
        for n in range(count):
            answer = await http.post(
                f"{base}/sessions", json={"message": f"Where is my order {n}?"}, headers=AUTH
            )
            if answer.status_code != 201:
                raise RuntimeError(f"POST /sessions: {answer.status_code} {answer.text}")
            ids.append(str(answer.json()["id"]))
        for session_id in ids:
            while True:
                answer = await http.get(f"{base}/sessions/{session_id}", headers=AUTH)
                status = answer.json().get("status") if answer.status_code == 200 else None
                if status == "input_required":
                    break
                if status not in (None, "submitted", "working"):
                    raise RuntimeError(f"session {session_id} is {status}: {answer.text}")
                await anyio.sleep(POLL)
    return ids


async def append_events(
    store: StateStore, sessions: list[str], passes: int, rate: float, rng: random.Random
) -> float:
    """`passes` over the sessions in a random order each, at `rate` appends per second
    over all (each append awaited: a saturated appender falls
    behind, which the rate it reached shows); returns that rate."""
    order = []
    for _ in range(passes):
        order += rng.sample(sessions, len(sessions))
    interval = 1 / rate
    with anyio.fail_after(len(order) * interval * 2 + 30):
        started = time.monotonic()
        for index, session_id in enumerate(order):
            delay = started + index * interval - time.monotonic()
            if delay > 0:
                await anyio.sleep(delay)
            event = {"type": "bench", "sent": time.time_ns(), "n": index}
            await store.append(session_id, Stream.EVENTS, event)
        elapsed = time.monotonic() - started
    return len(order) / elapsed if elapsed > 0 else math.inf


# --------------------------------------------------------------------------------------
# The client process (bench/sse_clients.py), driven through its files


async def wait_file(path: Path, seconds: float, client: Child) -> dict[str, Any]:
    """The JSON the client writes to `path`, once it has (bounded)."""
    for _ in range(int(seconds / POLL)):
        found: dict[str, Any] | None = read_json(path)
        if found is not None:
            return found
        if client.process.poll() is not None:
            raise RuntimeError(
                f"the client exited ({client.process.returncode}) early:\n{client.tail()}"
            )
        await anyio.sleep(POLL)
    raise TimeoutError(f"the client wrote no {path.name} in {seconds:g} s:\n{client.tail()}")


@dataclass
class Client:
    """One run of the client process."""

    child: Child
    paths: dict[str, Path]
    spec: ClientSpec

    async def ready(self) -> dict[str, Any]:
        return await wait_file(self.paths["ready"], self.spec.open_timeout + 30, self.child)

    def go(self) -> None:
        write_json(self.paths["go"], {})

    async def result(self) -> dict[str, Any]:
        found = await wait_file(self.paths["result"], self.spec.events_timeout + 30, self.child)
        for _ in range(int(CLIENT_EXIT_TIMEOUT / POLL)):
            if self.child.process.poll() is not None:
                break
            await anyio.sleep(POLL)
        return found


def start_client(
    group: Children,
    directory: Path,
    name: str,
    base: str,
    *,
    sessions: list[str],
    per_session: int,
    events: int,
    events_timeout: float,
    open_at_once: int,
) -> Client:
    """The client process on `base`: `per_session` streams per session, each waiting for
    `events` events (0: opened, counted and closed)."""
    paths = {kind: directory / f"{name}-{kind}.json" for kind in ("spec", "ready", "go", "result")}
    for path in paths.values():
        path.unlink(missing_ok=True)
    spec = ClientSpec(
        base=base,
        headers=AUTH,
        sessions=sessions,
        per_session=per_session,
        events=events,
        open_at_once=open_at_once,
        open_timeout=OPEN_TIMEOUT,
        events_timeout=events_timeout,
        ready_path=str(paths["ready"]),
        result_path=str(paths["result"]),
        go_path=str(paths["go"]),
    )
    paths["spec"].write_text(json.dumps(asdict(spec)))
    argv = [PYTHON, "-m", "bench.sse_clients", str(paths["spec"])]
    return Client(group.spawn(name, argv), paths, spec)


# --------------------------------------------------------------------------------------
# What is read off the processes and off Redis


def rss_bytes(pid: int) -> int:
    """A process's resident set (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def machine_busy_ns() -> int:
    """CPU time every core of the machine spent busy so far (/proc/stat's first line)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) * 1_000_000_000 // front_bench.TICKS_PER_S


SCRIPT_COMMANDS: Final = ("cmdstat_evalsha", "cmdstat_evalsha_ro", "cmdstat_eval")


async def redis_info(url: str) -> dict[str, float]:
    """redis-server's connected clients, pub/sub connections and commands so far."""
    client = Redis.from_url(url)
    try:
        clients = await client.info("clients")
        stats = await client.info("commandstats")
        listed = await client.client_list()
    finally:
        await client.aclose()
    calls = sum(int(entry["calls"]) for entry in stats.values())
    scripts = sum(int(stats.get(name, {}).get("calls", 0)) for name in SCRIPT_COMMANDS)
    pubsub = sum(1 for entry in listed if int(entry.get("sub", 0)) > 0)
    return {
        "connected": float(clients["connected_clients"]),
        "pubsub": float(pubsub),
        "calls": float(calls),
        "scripts": float(scripts),
    }
