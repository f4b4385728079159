"""The gateway's Prometheus metrics, fed by the real hooks: a real call service over the
echo upstream, a real engine with a scripted planner on the memory store, a real /mcp
endpoint; read back from the exposition text as a scraper would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.calls import CallRecord, Completed, Refused, ToolCall
from gateway.engine.planners.base import Answer, Turn, Usage
from gateway.engine.session import Session
from gateway.engine.states import SessionState
from gateway.front.http import McpRequest
from gateway.metrics import Metrics
from tests.engine.helpers import ALICE, Bench, Recording, envelope, reply, running_bench, tool
from tests.helpers import until

pytestmark = pytest.mark.anyio

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
async def bench() -> AsyncIterator[Bench]:
    async with running_bench() as bench:
        yield bench


def scraped(metrics: Metrics) -> Samples:
    """Every sample of the exposition, by name and labels, parsed as a scraper would."""
    text, content_type = metrics.render()
    assert content_type == prometheus_client.CONTENT_TYPE_LATEST
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode("utf-8"))
        for sample in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return scraped(metrics).get((name, tuple(sorted(labels.items()))))


def gauge(metrics: Metrics) -> dict[str, float]:
    """gateway_sessions by state."""
    return {
        dict(labels)["state"]: count
        for (name, labels), count in scraped(metrics).items()
        if name == "gateway_sessions"
    }


class Costly(Recording):
    """A scripted planner whose every turn reports its tokens, as a real model's does."""

    async def decide(self, turn: Turn) -> Answer:
        answer = await super().decide(turn)
        return Answer(answer.id, answer.data, Usage(500, 100, 20, 10, 0.01))


async def test_each_gateway_counts_in_its_own_registry() -> None:
    one, other = Metrics(), Metrics()
    one.observe_request("/health", "GET", 200, 0.001)
    route = {"route": "/health", "method": "GET", "status": "200"}
    assert value(one, "gateway_http_requests_total", **route) == 1
    assert value(other, "gateway_http_requests_total", **route) is None
    default = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "gateway_" not in default
    assert value(one, "process_cpu_seconds_total") is not None  # what the default one has


async def test_tool_calls_are_counted_by_upstream_and_decision(bench: Bench) -> None:
    metrics = Metrics()
    stop = bench.service.on_outcome(metrics.record_call)
    with anyio.fail_after(30):
        allowed = await bench.service.call(ALICE, ToolCall("echo__echo", {"n": 3}))
        scoped = await bench.service.call(ALICE, ToolCall("echo__echo", {"n": 50}))
        denied = await bench.service.call(ALICE, ToolCall("echo__crash", {}))
        bench.service.held(ALICE, ToolCall("echo__pay", {"amount": 9}), "for approval")
    stop()
    assert isinstance(allowed, Completed)
    assert isinstance(scoped, Refused)
    assert isinstance(denied, Refused)
    calls = "gateway_tool_calls_total"
    assert value(metrics, calls, upstream="echo", decision="allowed", ended="ok") == 1
    assert value(metrics, calls, upstream="", decision="out_of_scope", ended="") == 1
    assert value(metrics, calls, upstream="", decision="denied", ended="") == 1
    assert value(metrics, calls, upstream="", decision="held", ended="") == 1
    # Timed: only the call that ran.
    assert value(metrics, "gateway_tool_call_seconds_count", upstream="echo") == 1
    seconds = value(metrics, "gateway_tool_call_seconds_sum", upstream="echo")
    assert seconds is not None
    assert 0 < seconds < 30
    assert value(metrics, "gateway_tool_call_seconds_count", upstream="") is None
    # Bounded labels: no user, org, tool or argument anywhere.
    samples = scraped(metrics)
    assert {tuple(key for key, _ in labels) for name, labels in samples if name == calls} == {
        ("decision", "ended", "upstream")
    }
    text = metrics.render()[0].decode()
    for unbounded in ("alice", "acme", "echo__", "50"):
        assert f'"{unbounded}' not in text


async def test_a_session_run_to_completion_counts_its_turns_tokens_and_states(
    bench: Bench,
) -> None:
    metrics = Metrics()
    engine = bench.engine(Costly([tool("echo__echo", n=3), reply("three")]))
    engine.recorder.on_event(metrics.record_event)
    stop = bench.service.on_outcome(metrics.record_call)
    with anyio.fail_after(30):
        session = await engine.start(ALICE, "please help")
        assert gauge(metrics)["submitted"] == 1
        result = await engine.run(session)
    stop()
    assert result.state is SessionState.COMPLETED
    assert value(metrics, "gateway_sessions_started_total") == 1
    assert value(metrics, "gateway_engine_turns_total") == 2
    tokens = "gateway_engine_tokens_total"
    assert value(metrics, tokens, kind="input") == 1000
    assert value(metrics, tokens, kind="output") == 200
    assert value(metrics, tokens, kind="cache_read") == 40
    assert value(metrics, tokens, kind="cache_write") == 20
    transitions = "gateway_session_transitions_total"
    assert value(metrics, transitions, to="working") == 1
    assert value(metrics, transitions, to="completed") == 1
    assert gauge(metrics) == {"submitted": 0, "working": 0, "input_required": 0}
    calls = "gateway_tool_calls_total"
    assert value(metrics, calls, upstream="echo", decision="allowed", ended="ok") == 1


async def test_an_invalid_envelope_is_a_turn_too(bench: Bench) -> None:
    metrics = Metrics()
    engine = bench.engine(Recording([{"kind": "dance"}, reply("fixed")]))
    engine.recorder.on_event(metrics.record_event)
    with anyio.fail_after(30):
        result = await engine.run(await engine.start(ALICE, "please help"))
    assert result.state is SessionState.COMPLETED
    assert value(metrics, "gateway_engine_turns_total") == 2
    assert value(metrics, "gateway_engine_tokens_total", kind="input") == 0  # none reported


async def test_the_live_gauge_follows_a_session_that_waits_and_goes_on(bench: Bench) -> None:
    script = [envelope("clarify", question="Which n?"), tool("echo__echo", n=4), reply("4")]
    here = Metrics()
    engine = bench.engine(Recording(script))
    engine.recorder.on_event(here.record_event)
    with anyio.fail_after(60):
        asked = await engine.run(await engine.start(ALICE, "echo a number"))
        assert asked.state is SessionState.INPUT_REQUIRED
        assert gauge(here) == {"submitted": 0, "working": 0, "input_required": 1}
        # Answered on this replica (another engine, the same process): off input_required.
        again = bench.engine(Recording(script))
        again.recorder.on_event(here.record_event)
        done = await again.answer(await again.load(asked.session_id, ALICE), "four")
        assert done.state is SessionState.COMPLETED
        assert gauge(here) == {"submitted": 0, "working": 0, "input_required": 0}
        assert value(here, "gateway_session_transitions_total", to="working") == 2

        # Answered on another replica: counted there from its first event there, and
        # never below zero; here, it stays where it was last seen (per replica).
        asked = await engine.run(await engine.start(ALICE, "echo a number"))
        there = Metrics()
        other = bench.engine(Recording(script))
        other.recorder.on_event(there.record_event)
        done = await other.answer(await other.load(asked.session_id, ALICE), "four")
    assert done.state is SessionState.COMPLETED
    assert gauge(there) == {"submitted": 0, "working": 0, "input_required": 0}
    assert value(there, "gateway_session_transitions_total", to="working") == 1
    assert value(there, "gateway_session_transitions_total", to="completed") == 1
    assert value(there, "gateway_sessions_started_total") == 0
    assert value(there, "gateway_engine_turns_total") == 2
    assert gauge(here) == {"submitted": 0, "working": 0, "input_required": 1}


async def test_a_state_event_from_a_state_never_counted_here_keeps_the_gauge_at_zero() -> None:
    metrics = Metrics()
    waiting = Session("s_waiting", ALICE, "hi", state=SessionState.INPUT_REQUIRED)
    metrics.record_event(waiting, "state", {"from": "input_required", "to": "working"})
    assert gauge(metrics) == {"submitted": 0, "working": 1, "input_required": 0}
    running = Session("s_running", ALICE, "hi", state=SessionState.WORKING)
    metrics.record_event(running, "state", {"from": "working", "to": "failed", "why": "x"})
    assert gauge(metrics) == {"submitted": 0, "working": 1, "input_required": 0}
    assert value(metrics, "gateway_session_transitions_total", to="failed") == 1
    metrics.record_event(waiting, "state", {"from": "working", "to": "completed"})
    assert gauge(metrics) == {"submitted": 0, "working": 0, "input_required": 0}


async def test_http_requests_are_counted_by_route_template_method_and_status() -> None:
    metrics = Metrics()
    metrics.observe_request("/sessions/{id}", "GET", 200, 0.02)
    metrics.observe_request("/sessions/{id}", "GET", 200, 0.04)
    metrics.observe_request("/sessions/{id}", "GET", 404, 0.001)
    metrics.observe_request("/sessions", "BREW", 405, 0.001)  # any token is a method
    metrics.observe_request("/sessions/{id}/events", "GET", 0, 12.0)  # the client went away
    requests = "gateway_http_requests_total"
    assert value(metrics, requests, route="/sessions/{id}", method="GET", status="200") == 2
    assert value(metrics, requests, route="/sessions/{id}", method="GET", status="404") == 1
    assert value(metrics, requests, route="/sessions", method="other", status="405") == 1
    assert value(metrics, requests, route="/sessions/{id}/events", method="GET", status="0") == 1
    count = "gateway_http_request_seconds_count"
    assert value(metrics, count, route="/sessions/{id}", method="GET") == 3
    total = value(metrics, "gateway_http_request_seconds_sum", route="/sessions/{id}", method="GET")
    assert total == pytest.approx(0.061)
    bucket = "gateway_http_request_seconds_bucket"
    assert value(metrics, bucket, route="/sessions/{id}", method="GET", le="0.025") == 2
    assert value(metrics, bucket, route="/sessions/{id}/events", method="GET", le="10.0") == 0


async def test_mcp_requests_are_counted_from_the_real_endpoint(tmp_path: Path) -> None:
    from tests.front.harness import KEYS, running_gateway

    metrics = Metrics()
    count = "gateway_http_request_seconds_count"
    headers = {"Accept": "application/json, text/event-stream"}
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "metrics-test", "version": "0"},
        },
    }
    with anyio.fail_after(60):
        async with running_gateway(tmp_path) as gateway:
            stop = gateway.app.state.mcp.on_request(metrics.record_mcp)
            async with httpx2.AsyncClient(timeout=10) as http:
                refused = await http.post(gateway.url, json=initialize, headers=headers)
                bearer = {**headers, "Authorization": f"Bearer {KEYS['alice']}"}
                served = await http.post(gateway.url, json=initialize, headers=bearer)
            # The hook is told once the server's task ends the request, maybe after the
            # client has read the whole response.
            await until(lambda: value(metrics, count, route="/mcp", method="POST") == 2)
            stop()
    assert refused.status_code == 401
    assert served.status_code == 200
    requests = "gateway_http_requests_total"
    assert value(metrics, requests, route="/mcp", method="POST", status="401") == 1
    assert value(metrics, requests, route="/mcp", method="POST", status="200") == 1
    assert '"alice' not in metrics.render()[0].decode()  # the principal is no label


async def test_malformed_records_and_fields_are_skipped_never_raised() -> None:
    metrics = Metrics()
    bad: Any = object()
    call = ToolCall("echo__echo", {"n": 1})
    metrics.record_call(bad)
    metrics.record_call(CallRecord(ALICE, call, bad, "", 0.1))
    metrics.record_call(CallRecord(ALICE, call, "allowed", "", 0.1, bad, None, None, "echo"))
    metrics.record_call(CallRecord(ALICE, call, "allowed", "", 0.1, "ok", None, None, bad))
    nan = CallRecord(ALICE, call, "allowed", "", float("nan"), "ok", None, None, "echo")
    metrics.record_call(nan)  # counted, not timed
    calls = "gateway_tool_calls_total"
    assert value(metrics, calls, upstream="echo", decision="allowed", ended="ok") == 1
    assert [name for name, _ in scraped(metrics) if name == calls] == [calls]
    assert value(metrics, "gateway_tool_call_seconds_count", upstream="echo") is None

    session = Session("s_malformed", ALICE, "hi")
    usage = {"input_tokens": -5, "output_tokens": "many", "cache_read_tokens": True}
    metrics.record_event(session, "envelope", {"usage": {**usage, "cache_write_tokens": 7}})
    metrics.record_event(session, "envelope", {"usage": "lots"})
    metrics.record_event(session, "invalid_envelope", bad)
    metrics.record_event(session, bad, {})
    metrics.record_event(bad, "accepted", {})
    metrics.record_event(Session(bad, ALICE, "hi"), "accepted", {})
    metrics.record_event(Session("s_odd", ALICE, "hi", state=bad), "accepted", {})
    metrics.record_event(session, "state", {"from": None, "to": "nowhere"})
    metrics.record_event(session, "state", {"to": bad})
    metrics.record_event(session, "state", {})
    assert value(metrics, "gateway_engine_turns_total") == 2
    tokens = "gateway_engine_tokens_total"
    assert value(metrics, tokens, kind="cache_write") == 7
    assert value(metrics, tokens, kind="input") == 0
    assert value(metrics, tokens, kind="output") == 0
    assert value(metrics, tokens, kind="cache_read") == 0
    assert value(metrics, "gateway_sessions_started_total") == 1  # s_odd: started, no state
    assert not [name for name, _ in scraped(metrics) if name == "gateway_session_transitions_total"]
    assert gauge(metrics) == {"submitted": 1, "working": 0, "input_required": 0}

    metrics.record_mcp(bad)
    metrics.record_mcp(McpRequest("POST", None, bad, 0.1))
    metrics.record_mcp(McpRequest(bad, None, 200, 0.1))
    metrics.record_mcp(McpRequest("POST", None, 200, -1.0))  # counted, not timed
    metrics.observe_request(bad, "GET", 200, 0.1)
    metrics.observe_request("/health", "GET", True, 0.1)
    metrics.observe_request("/health", "GET", 200, bad)  # counted, not timed
    requests = "gateway_http_requests_total"
    assert value(metrics, requests, route="/mcp", method="POST", status="200") == 1
    assert value(metrics, requests, route="/health", method="GET", status="200") == 1
    assert [name for name, _ in scraped(metrics) if name == requests] == [requests, requests]
    assert value(metrics, "gateway_http_request_seconds_count", route="/mcp", method="POST") is None
