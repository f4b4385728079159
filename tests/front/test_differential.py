"""Differential tests that vary the gateway's two switches one at a time.

A tools/call to a 2026-era streamable-HTTP upstream passes two pieces that each exist
twice: the door it comes in by (the gateway's own, front/modern_calls.py and
front/session_calls.py, or the SDK's: `server.direct_calls`) and the leg it goes out by
(a hand-built exchange, upstreams/exchange.py, or the SDK client: `Pool(direct_calls=...)`).
Four gateways, one per combination, stand in front of the same upstreams
(tests/upstreams/servers/faults.py). Each case runs once through all four, for a
2026-07-28 caller and for a handshake-era caller on a session, and two tests compare
what the client received (normalized for timing only) and the audit records the case
left (less their times): door against door on each leg, and leg against leg at each door.
A third checks that each case does what it names, so that agreement is not agreement on
nothing. Where the two sides really differ, the comparison is an expected failure that
says what differs (DIVERGENCES).
"""

from __future__ import annotations

import gc
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.breaker import Breaker
from gateway.upstreams import connection as upstream_connection
from gateway.upstreams.connection import UpstreamConnection
from tests.conftest import ROOT
from tests.front.harness import Gateway, key_entries, running_gateway
from tests.front.helpers import (
    modern_call,
    modern_headers,
    modern_post,
    open_session,
    said_in,
    session_call,
    session_post,
)
from tests.redis_server import free_port
from tests.upstreams.helpers import listening, text
from tests.upstreams.servers.faults import REFUSED

pytestmark = pytest.mark.anyio

DOORS = ("gateway", "sdk")
LEGS = ("exchange", "sdk")
REFERENCE = ("gateway", "exchange")
"""The combination a gateway runs by default, whose outcomes test_the_cases_do_what_they_name
checks."""
MODERN, HANDSHAKE = "2026-07-28", "handshake"
ERAS = (MODERN, HANDSHAKE)
SHORT = {MODERN: "modern", HANDSHAKE: "handshake"}

ORG = """
users:
  alice: {roles: [support]}
tags:
  - tag: support
    kind: role
    payload:
      config:
        assigned_roles: [support]
        allowed_tools: ["faults__*", "hasty__sleep", "brittle__sleep", "lost_*", "gone_*"]
        scopes:
          faults__echo: {n: {max: 5}}
"""

UPSTREAMS = {
    # name: (the process it calls, call_timeout)
    "faults": ("main", 10),
    "hasty": ("main", 0.3),
    "brittle": ("main", 0.2),
    **{f"lost_{SHORT[era]}": ("fragile", 10) for era in ERAS},
    **{f"gone_{SHORT[era]}": ("fragile", 10) for era in ERAS},
}
"""Upstreams by name. A case that breaks one (its breaker, its process) has its own, one
per caller era, so that every case meets an upstream that has not failed before. The
fragile process is killed by the first of the cases that need it dead (starting an SDK
server costs seconds of CPU, so there is one process, not one per case and era)."""


class Upstream:
    """A faults server process on a port of its own, which a case may stop (or kill
    mid-call)."""

    def __init__(self, taken: set[int]) -> None:
        # free_port() may give a port again once it has been let go: each its own.
        self.port = free_port()
        while self.port in taken:
            self.port = free_port()
        taken.add(self.port)
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.upstreams.servers.faults", str(self.port)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    async def wait_listening(self) -> None:
        deadline = time.monotonic() + 30
        while not listening(self.port):
            if not self.running or time.monotonic() > deadline:
                raise RuntimeError(f"the faults upstream on port {self.port} did not start")
            await anyio.sleep(0.05)

    def stop(self, how: signal.Signals = signal.SIGTERM) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(how)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@dataclass
class Combo:
    door: str
    leg: str
    gateway: Gateway
    session: dict[str, str] | None = None
    """A handshake-era session's request headers, opened on first use."""

    @property
    def key(self) -> tuple[str, str]:
        return self.door, self.leg

    def audit(self) -> list[dict[str, Any]]:
        return list(self.gateway.app.state.runtime.audit.read())

    def connection(self, upstream: str) -> UpstreamConnection:
        found: UpstreamConnection = self.gateway.app.state.pool.connections[upstream]
        return found

    async def session_headers(self) -> dict[str, str]:
        if self.session is None:
            self.session = await open_session(self.gateway)
        return self.session


Outcome = tuple[Any, list[dict[str, Any]]]
"""What the caller received, and the audit records the case left, both normalized."""
Outcomes = dict[tuple[str, str], Outcome]


@dataclass
class Bench:
    combos: list[Combo]
    processes: dict[str, Upstream]
    outcomes: dict[tuple[str, str], Outcomes] = field(default_factory=dict)
    """Each case's, by case and era: run once, compared by two tests."""


def config(door: str, processes: dict[str, Upstream]) -> str:
    entries = "".join(
        f"  {name}: {{transport: streamable_http, url: '{processes[process].url}', "
        f"call_timeout: {timeout}}}\n"
        for name, (process, timeout) in UPSTREAMS.items()
    )
    return (
        f"server: {{direct_calls: {'true' if door == 'gateway' else 'false'}}}\n"
        "tags: {dir: orgs, watch: false}\n"
        "auth:\n  api_keys:\n" + key_entries() + "upstreams:\n" + entries
    )


async def ready(combo: Combo, *upstreams: str) -> None:
    """Until `upstreams` take calls at `combo`'s gateway; then they go by its leg."""
    with anyio.fail_after(30):
        for name in upstreams:
            await combo.connection(name).wait_ready()
    for name in upstreams:
        assert combo.connection(name).calls_direct is (combo.leg == "exchange"), combo.key


@pytest.fixture(scope="module")
async def bench(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bench]:
    ports: set[int] = set()
    processes = {process: Upstream(ports) for process in ("main", "fragile")}
    with pytest.MonkeyPatch.context() as patch:
        # No health checks of idle connections: what a gateway knows of an upstream's
        # health comes from the calls of the cases alone, the same at every gateway.
        patch.setattr(upstream_connection, "HEALTH_INTERVAL", 3600.0)
        try:
            for process in processes.values():
                process.start()
            for process in processes.values():
                await process.wait_listening()
            async with AsyncExitStack() as stack:
                combos = []
                for door in DOORS:
                    for leg in LEGS:
                        gateway = await stack.enter_async_context(
                            running_gateway(
                                tmp_path_factory.mktemp(f"{door}-door-{leg}-leg"),
                                config(door, processes),
                                orgs={"acme": ORG},
                                upstream_direct_calls=leg == "exchange",
                            )
                        )
                        combos.append(Combo(door, leg, gateway))
                for combo in combos:
                    await ready(combo, *UPSTREAMS)
                    has_door = combo.gateway.app.state.mcp._calls is not None
                    assert has_door is (combo.door == "gateway"), combo.key
                yield Bench(combos, processes)
        finally:
            for process in processes.values():
                process.stop()


# What a caller receives, normalized for timing alone.

_WAIT = re.compile(r"calls resume in \d+(\.\d+)? s")


def normalized(value: Any) -> Any:
    if isinstance(value, str):
        return _WAIT.sub("calls resume in <wait> s", value)  # an open breaker's countdown
    if isinstance(value, list | tuple):
        return [normalized(item) for item in value]
    if isinstance(value, dict):
        return {key: normalized(item) for key, item in value.items()}
    return value


def records(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Audit records without their times."""
    kept: list[dict[str, Any]] = normalized(
        [{k: v for k, v in entry.items() if k not in ("at", "latency_ms")} for entry in entries]
    )
    return kept


async def ask(
    combo: Combo, era: str, tool: str, arguments: dict[str, Any], meta: dict[str, Any] | None = None
) -> list[Any]:
    """One call as a caller of `era` makes it: what it receives is [status, content type,
    messages] (2026-07-28), or [status, whether the session was named, messages]."""
    if era == MODERN:
        return list(await modern_post(combo.gateway, modern_call(tool, arguments, meta)))
    headers = await combo.session_headers()
    body = session_call(tool, arguments, meta)
    return list(said_in(await session_post(combo.gateway, headers, body)))


async def headers_for(combo: Combo, era: str, body: dict[str, Any]) -> dict[str, str]:
    """The headers `body` goes with, for a caller of `era`."""
    if era == MODERN:
        return modern_headers(body)
    return await combo.session_headers()


def body_of(era: str, tool: str, arguments: dict[str, Any], meta: dict[str, Any]) -> Any:
    return (modern_call if era == MODERN else session_call)(tool, arguments, meta)


async def messages_of(response: httpx2.Response) -> AsyncIterator[Any]:
    """The JSON-RPC messages of a response, as they come (SSE or JSON)."""
    if response.headers.get("content-type", "").startswith("application/json"):
        yield json.loads(await response.aread())
        return
    async for line in response.aiter_lines():
        if line.startswith("data:") and line[len("data:") :].strip():
            yield json.loads(line[len("data:") :])


async def each(
    bench: Bench, run: Callable[[Combo], Awaitable[Any]], *, unordered: bool = False
) -> Outcomes:
    """`run` at every gateway in turn, with the audit records it left there (sorted when
    the calls of `run` overlap, so that they end in no particular order)."""
    found: Outcomes = {}
    for combo in bench.combos:
        before = len(combo.audit())
        said = await run(combo)
        left = records(combo.audit()[before:])
        if unordered:
            left.sort(key=lambda entry: json.dumps(entry, sort_keys=True))
        found[combo.key] = (normalized(said), left)
    return found


async def until_audited(combo: Combo, count: int) -> None:
    """Until `combo`'s audit log holds `count` records (a cancelled call's is written as
    the cancellation reaches it), or 10 s went by: the comparison then tells."""
    for _ in range(200):
        if len(combo.audit()) >= count:
            return
        await anyio.sleep(0.05)


# The cases.

Run = Callable[[Bench, str], Awaitable[Outcomes]]


def single(tool: str, arguments: dict[str, Any]) -> Run:
    async def run(bench: Bench, era: str) -> Outcomes:
        return await each(bench, lambda combo: ask(combo, era, tool, arguments))

    return run


async def breaker_opens(bench: Bench, era: str) -> Outcomes:
    async def run(combo: Combo) -> list[Any]:
        # A breaker of the case's own: opened by two failures, and for longer than the case.
        combo.connection("brittle").breaker = Breaker(threshold=2, cooldown=600, max_cooldown=600)
        return [await ask(combo, era, "brittle__sleep", {"seconds": 3}) for _ in range(3)]

    return await each(bench, run)


async def upstream_down(bench: Bench, era: str) -> Outcomes:
    """The upstream's process stopped before the call (its connection never failed)."""
    bench.processes["fragile"].stop()
    return await each(bench, lambda combo: ask(combo, era, f"gone_{SHORT[era]}__echo", {"n": 1}))


async def lost_mid_call(bench: Bench, era: str) -> Outcomes:
    """A call of every gateway, for a caller of each era, runs on the fragile upstream when
    its process is killed: the outcomes of both eras at once (kept for the other era's
    tests), since the process dies once."""
    fragile = bench.processes["fragile"]
    if not fragile.running:  # stopped by an "upstream down" that ran first
        fragile.start()
        await fragile.wait_listening()
    runs = [(combo, one) for combo in bench.combos for one in ERAS]
    for combo in bench.combos:
        await ready(combo, *(f"lost_{SHORT[one]}" for one in ERAS))
    said: dict[tuple[str, str, str], Any] = {}
    before = {combo.key: len(combo.audit()) for combo in bench.combos}
    running: list[tuple[Combo, str]] = []
    everyone = anyio.Event()

    async def call(combo: Combo, era: str) -> None:
        body = body_of(era, f"lost_{SHORT[era]}__sleep", {"seconds": 30}, {"progressToken": "p"})
        headers = await headers_for(combo, era, body)
        received: list[Any] = []
        async with (
            httpx2.AsyncClient(timeout=20) as http,
            http.stream("POST", combo.gateway.url, content=json.dumps(body), headers=headers) as r,
        ):
            async for message in messages_of(r):
                received.append(message)
                if len(received) == 1:  # its first progress: it runs upstream
                    running.append((combo, era))
                    if len(running) == len(runs):
                        everyone.set()
        said[(*combo.key, era)] = [r.status_code, received]

    async with anyio.create_task_group() as tasks:
        for combo, one in runs:
            tasks.start_soon(call, combo, one)
        with anyio.fail_after(20):
            await everyone.wait()
        fragile.stop(signal.SIGKILL)
    for one in ERAS:
        bench.outcomes["connection lost mid-call", one] = {
            combo.key: (
                normalized(said[(*combo.key, one)]),
                [
                    entry
                    for entry in records(combo.audit()[before[combo.key] :])
                    if entry["tool"] == f"lost_{SHORT[one]}__sleep"
                ],
            )
            for combo in bench.combos
        }
    return bench.outcomes["connection lost mid-call", era]


async def duplicate_ids(bench: Bench, era: str) -> Outcomes:
    """Two calls with the same JSON-RPC id at once: two POSTs of a 2026-07-28 caller, each
    a request of its own; a handshake-era caller's second on the same session while the
    first runs, which the session's rules forbid (an id is not reused in a session)."""

    async def modern(combo: Combo) -> list[Any]:
        answers: dict[int, Any] = {}

        async def one(n: int) -> None:
            answers[n] = await ask(combo, era, "faults__echo", {"n": n, "hold": 0.5})

        async with anyio.create_task_group() as tasks:
            for n in (1, 2):
                tasks.start_soon(one, n)
        return [answers[1], answers[2]]

    async def on_session(combo: Combo) -> list[Any]:
        headers = await combo.session_headers()
        # One progress as the first call begins, none after: the first call is known to run
        # upstream when the second is sent, and there are no notifications of it that the
        # second's stream could carry, depending on timing alone.
        first = session_call(
            "faults__sleep", {"seconds": 0.6, "steps": 1, "tag": "dup"}, {"progressToken": 1}
        )
        second = session_call("faults__echo", {"n": 2})
        received: list[Any] = []
        answered: list[Any] = []
        # The SDK's transport keeps one stream per request id: a second request with the
        # id replaces the first's streams, which are dropped unclosed (ResourceWarning).
        # Counted here, as part of what happens, rather than left to fail a later test.
        with warnings.catch_warnings(record=True) as dropped:
            warnings.simplefilter("always", ResourceWarning)
            # A read timeout: the first call's answer comes 0.6 s after its progress, or
            # not at all.
            async with httpx2.AsyncClient(timeout=httpx2.Timeout(20, read=3)) as http:
                try:
                    async with http.stream(
                        "POST", combo.gateway.url, content=json.dumps(first), headers=headers
                    ) as r:
                        async for message in messages_of(r):
                            received.append(message)
                            if len(received) == 1:  # it runs: the second, with its id
                                answered = said_in(
                                    await session_post(combo.gateway, headers, second)
                                )[2]
                except httpx2.ReadTimeout:
                    received.append("no more events for 3 s")
            gc.collect()
        unclosed = [w for w in dropped if issubclass(w.category, ResourceWarning)]
        return [received, answered, f"{len(unclosed)} streams dropped unclosed"]

    return await each(bench, modern if era == MODERN else on_session, unordered=True)


async def upstream_cancelled(url: str, tag: str) -> int:
    """How many of `tag`'s calls the upstream saw cancelled, asked directly (not through a
    gateway, whose audit log would record the question)."""
    async with (
        httpx2.AsyncClient(timeout=10) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        return int(text(await client.call_tool("cancelled", {"tag": tag})))


async def cancelled_by_closing(bench: Bench, era: str) -> Outcomes:
    """A 2026-07-28 caller cancels a call by closing its response stream."""
    url = bench.processes["main"].url

    async def run(combo: Combo) -> dict[str, Any]:
        tag = "closed stream"  # counted by no other case; each combination's in turn
        body = modern_call("faults__sleep", {"seconds": 10, "tag": tag}, {"progressToken": 1})
        received: list[Any] = []
        before = len(combo.audit())
        counted = await upstream_cancelled(url, tag)
        async with (
            httpx2.AsyncClient(timeout=20) as http,
            http.stream(
                "POST", combo.gateway.url, content=json.dumps(body), headers=modern_headers(body)
            ) as response,
        ):
            async for message in messages_of(response):
                received.append(message)
                break  # the first progress: the call runs; closed here
        await until_audited(combo, before + 1)
        seen = 0
        for _ in range(100):  # the upstream sees the cancellation soon after, or never
            seen = await upstream_cancelled(url, tag) - counted
            if seen:
                break
            await anyio.sleep(0.05)
        return {"received": received, "cancelled upstream": seen}

    return await each(bench, run)


@dataclass(frozen=True)
class Case:
    run: Run
    check: Callable[[Any, list[dict[str, Any]], str], None]
    """What the reference combination's outcome must show (test_the_cases_do_what_they_name)."""
    eras: tuple[str, ...] = ERAS
    legs: str = "both legs"
    """Which legs the case can tell apart; `before any leg` for a call refused first."""


def answer(said: list[Any]) -> dict[str, Any]:
    """The JSON-RPC answer of one call's `ask`."""
    last: dict[str, Any] = said[2][-1]
    return last


def tool_text(said: list[Any]) -> str:
    result = answer(said)["result"]
    assert result["isError"] is True
    found: str = result["content"][0]["text"]
    return found


def ended(audit: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(entry["decision"], entry.get("ended")) for entry in audit]


def check_ok(said: Any, audit: list[dict[str, Any]], era: str) -> None:
    assert said[0] == 200
    assert answer(said)["result"]["structuredContent"] == {"n": 3}
    assert ended(audit) == [("allowed", "ok")]


def check_tool_error(said: Any, audit: list[dict[str, Any]], era: str) -> None:
    assert tool_text(said) == "the tool failed"
    assert ended(audit) == [("allowed", "tool_error")]


def check_not_granted(said: Any, audit: list[dict[str, Any]], era: str) -> None:
    assert answer(said)["error"] == {"code": -32602, "message": "Unknown tool: hasty__echo"}
    assert ended(audit) == [("not_granted", None)]


def check_out_of_scope(said: Any, audit: list[dict[str, Any]], era: str) -> None:
    assert "n 50 exceeds max 5" in tool_text(said)
    assert ended(audit) == [("out_of_scope", None)]


def check_error_answer(said: Any, audit: list[dict[str, Any]], era: str) -> None:
    error = answer(said)["error"]
    assert (error["code"], error["message"]) == (REFUSED, "refused by the upstream")
    assert ended(audit) == [("allowed", "failed")]
    assert audit[0]["error"] == "refused by the upstream"


def check_http_500(said: Any, audit: list[dict[str, Any]], era: str) -> None:
    assert answer(said)["error"]["message"] == "Server returned an error response"
    assert ended(audit) == [("allowed", "failed")]


def check_timeout(said: Any, audit: list[dict[str, Any]], era: str) -> None:
    assert tool_text(said) == "sleep on upstream hasty did not answer within 0.3 s"
    assert ended(audit) == [("allowed", "failed")]


def check_breaker(said: Any, audit: list[dict[str, Any]], era: str) -> None:
    texts = [tool_text(one) for one in said]
    assert texts[:2] == ["sleep on upstream brittle did not answer within 0.2 s"] * 2
    assert texts[2] == (
        "upstream brittle failed 2 calls in a row; sleep on upstream brittle not sent, "
        "calls resume in <wait> s"
    )
    assert ended(audit) == [("allowed", "failed")] * 3


def check_down(said: Any, audit: list[dict[str, Any]], era: str) -> None:
    assert f"upstream gone_{SHORT[era]}" in tool_text(said)
    assert ended(audit) == [("allowed", "failed")]


def check_lost(said: Any, audit: list[dict[str, Any]], era: str) -> None:
    status, received = said
    assert status == 200
    assert received[0]["method"] == "notifications/progress"
    assert "connection" in received[-1]["result"]["content"][0]["text"]
    assert received[-1]["result"]["isError"] is True
    assert ended(audit) == [("allowed", "failed")]


def check_duplicates(said: Any, audit: list[dict[str, Any]], era: str) -> None:
    if era == MODERN:
        for n, one in zip((1, 2), said, strict=True):
            assert answer(one)["id"] == 7
            assert answer(one)["result"]["structuredContent"] == {"n": n, "hold": 0.5}
        assert ended(audit) == [("allowed", "ok")] * 2
    else:
        first, second, _ = said
        assert first[0]["method"] == "notifications/progress"
        assert first[-1]["result"]["content"][0]["text"] == "slept"
        assert second == [{"jsonrpc": "2.0", "id": 7, "result": answer([0, 0, second])["result"]}]
        assert second[0]["result"]["structuredContent"] == {"n": 2}


def check_cancelled(said: Any, audit: list[dict[str, Any]], era: str) -> None:
    assert said["received"][0]["method"] == "notifications/progress"
    assert said["cancelled upstream"] == 1
    assert ended(audit) == [("allowed", "cancelled")]


CASES: dict[str, Case] = {
    "ok": Case(single("faults__echo", {"n": 3}), check_ok),
    "tool error": Case(single("faults__fail", {}), check_tool_error),
    "not granted": Case(single("hasty__echo", {}), check_not_granted, legs="before any leg"),
    "out of scope": Case(
        single("faults__echo", {"n": 50}), check_out_of_scope, legs="before any leg"
    ),
    "JSON-RPC error answer": Case(single("faults__refuse", {}), check_error_answer),
    "HTTP 500": Case(single("faults__sick", {}), check_http_500),
    "call timeout": Case(single("hasty__sleep", {"seconds": 3}), check_timeout),
    "breaker open": Case(breaker_opens, check_breaker),
    # Before "upstream down", which stops the process this one kills mid-call.
    "connection lost mid-call": Case(lost_mid_call, check_lost),
    "upstream down": Case(upstream_down, check_down),
    "duplicate ids at once": Case(duplicate_ids, check_duplicates),
    "cancelled by closing the stream": Case(cancelled_by_closing, check_cancelled, eras=(MODERN,)),
}

UNSENT_OR_LOST = (
    "the upstream's process stopped: the hand-built exchange cannot connect (twice) and "
    "says the call was not sent (UpstreamUnavailable, 'cannot be reached; ... not sent'); "
    "the SDK client's transport ends its whole session on the connect error and answers "
    "the call 'Connection closed', so that leg cannot tell whether it was sent and reports "
    "a lost connection; both are tool errors naming the upstream, audited `failed`"
)


DIVERGENCES: dict[tuple[str, str, str], str] = {
    # (case, era, axis): what differs, where the two sides of `axis` really differ.
    ("duplicate ids at once", HANDSHAKE, "doors"): (
        "a second request on the session with the id of one in flight: the gateway's door "
        "answers both (the first `slept` after its progress, the second its own result); at "
        "the SDK's door the second takes over the first's response stream (the SDK keys them "
        "by request id and overwrites), so the first gets its progress and then nothing until "
        "the client gives up, and the SDK drops 1 stream unclosed (ResourceWarning); both "
        "calls run upstream and are audited `ok` at every door"
    ),
    **{("upstream down", era, "legs"): UNSENT_OR_LOST for era in (MODERN, HANDSHAKE)},
}


def params(axis: str | None = None) -> list[Any]:
    found = []
    for name, case in CASES.items():
        for era in case.eras:
            reason = DIVERGENCES.get((name, era, axis)) if axis else None
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            ident = f"{name}, {case.legs}, {era}".replace(" ", "-")
            found.append(pytest.param(name, era, id=ident, marks=marks))
    return found


async def outcomes(bench: Bench, case: str, era: str) -> Outcomes:
    found = bench.outcomes.get((case, era))
    if found is None:
        found = bench.outcomes[case, era] = await CASES[case].run(bench, era)
    return found


@pytest.mark.parametrize(("case", "era"), params("doors"))
async def test_the_doors_agree(bench: Bench, case: str, era: str) -> None:
    found = await outcomes(bench, case, era)
    for leg in LEGS:
        assert found["gateway", leg] == found["sdk", leg], f"{case} ({era}), {leg} leg"


@pytest.mark.parametrize(("case", "era"), params("legs"))
async def test_the_legs_agree(bench: Bench, case: str, era: str) -> None:
    found = await outcomes(bench, case, era)
    for door in DOORS:
        assert found[door, "exchange"] == found[door, "sdk"], f"{case} ({era}), {door} door"


@pytest.mark.parametrize(("case", "era"), params())
async def test_the_cases_do_what_they_name(bench: Bench, case: str, era: str) -> None:
    said, audit = (await outcomes(bench, case, era))[REFERENCE]
    CASES[case].check(said, audit, era)
