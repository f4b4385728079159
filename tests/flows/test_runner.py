"""Sessions that run a flow tag (Engine.start(..., flow=, inputs=)), against the ops
upstream over stdio (servers/ops.py), which counts what reached it: templated arguments
arrive with their JSON types, `when` skips, independent steps run at once, retries are
attempts at the upstream, unsafe retries are refused before any step, `expect` fails a
step, the FLOW state lists every step, and a step with `on_error: replan` hands the
session to the planner (test_planning.py)."""

from __future__ import annotations

import json
import re
from typing import Any

import anyio
import pytest

from gateway.engine.states import SessionState
from gateway.errors import InvalidFlowInput, UnknownFlow
from tests.engine.helpers import Bench
from tests.flows.helpers import caller, flow_tag, run_flow, steps_status, tally

pytestmark = pytest.mark.anyio

CALC = flow_tag(
    "calc",
    {
        "description": "Add, show, add again",
        "inputs": {
            "type": "object",
            "properties": {
                "a": {"type": "integer"},
                "b": {"type": "integer"},
                "tag": {"type": "string", "default": "t"},
            },
            "required": ["a", "b"],
        },
        "steps": [
            {"id": "sum", "tool": "ops__add", "args": {"a": "{{ input.a }}", "b": "{{ input.b }}"}},
            {
                "id": "show",
                "tool": "ops__echo",
                "args": {
                    "double": "{{ steps.sum.structured.sum * 2 }}",
                    "label": "sum is {{ steps.sum.structured.sum }}",
                    "big": "{{ input.a > 1 }}",
                    "pair": "{{ [input.a, input.b] }}",
                    "tag": "{{ input.tag }}",
                    "plain": "no template",
                },
            },
            {
                "id": "never",
                "tool": "ops__echo",
                "when": "steps.sum.structured.sum > 100",
                "args": {"x": 1},
            },
            {
                "id": "again",
                "tool": "ops__add",
                "args": {
                    "a": "{{ steps.sum.structured.sum }}",
                    "b": "{{ steps.show.structured.args.double }}",
                },
            },
            {
                "id": "last",
                "tool": "ops__echo",
                "args": {"was": "{{ steps.never.status }}", "total": "{{ steps.again.text }}"},
            },
        ],
        "output": "{{ steps.sum.text }} then {{ steps.again.structured.sum }} "
        "({{ steps.never.status }})",
    },
)


async def test_five_steps_with_templated_arguments_and_a_skipped_step(bench: Bench) -> None:
    alice = caller(CALC)
    result = await run_flow(bench, alice, "calc", {"a": 3, "b": 4})
    assert result.state is SessionState.COMPLETED, result.text
    assert result.text == "7 then 21 (skipped)"
    state = await bench.store.get_flow_state(result.session_id, "calc")
    assert steps_status(state) == {
        "sum": "completed",
        "show": "completed",
        "never": "skipped",
        "again": "completed",
        "last": "completed",
    }
    assert state is not None
    assert state["status"] == "completed"
    show = state["steps"]["show"]["view"]["structured"]
    # What reached the upstream: one {{ expression }} kept its type, text among text is text.
    assert show["args"] == {
        "double": 14,
        "label": "sum is 7",
        "big": True,
        "pair": [3, 4],
        "tag": "t",
        "plain": "no template",
    }
    assert show["types"] == {
        "double": "int",
        "label": "str",
        "big": "bool",
        "pair": "list",
        "tag": "str",
        "plain": "str",
    }
    last = state["steps"]["last"]["view"]["structured"]["args"]
    assert last == {"was": "skipped", "total": "21"}
    assert [(call.tool, call.decision) for call in result.calls] == [
        ("ops__add", "allowed"),
        ("ops__echo", "allowed"),
        ("ops__add", "allowed"),
        ("ops__echo", "allowed"),
    ]
    assert (await tally(bench, alice))["calls"] == {"add": 2, "echo": 2}


FAN = flow_tag(
    "fan",
    {
        "inputs": {"type": "object", "properties": {"wait": {"type": "number", "default": 10}}},
        "steps": [
            {"id": "one", "tool": "ops__add", "args": {"a": 1, "b": 1}},
            {
                "id": "left",
                "tool": "ops__meet",
                "args": {
                    "room": "r{{ steps.one.text }}",
                    "who": "left",
                    "wait": "{{ input.wait }}",
                },
            },
            {
                "id": "right",
                "tool": "ops__meet",
                "args": {
                    "room": "r{{ steps.one.text }}",
                    "who": "right",
                    "wait": "{{ input.wait }}",
                },
            },
            {
                "id": "join",
                "tool": "ops__echo",
                "args": {"l": "{{ steps.left.text }}", "r": "{{ steps.right.text }}"},
            },
        ],
        "output": {"left": "{{ steps.left.text }}", "right": "{{ steps.right.structured.met }}"},
    },
)


async def test_independent_steps_run_at_once(bench: Bench) -> None:
    alice = caller(FAN)
    result = await run_flow(bench, alice, "fan")
    assert result.state is SessionState.COMPLETED, result.text
    # Each meet waits (boundedly) for the other: both met, so they ran at the same time.
    assert result.text is not None
    assert json.loads(result.text) == {"left": "left met right", "right": "left"}
    events = await bench.events(result.session_id)
    order = [(e["step"], e["status"]) for e in events if e["type"] == "step"]

    def at(step: str, status: str) -> int:
        return order.index((step, status))

    for side in ("left", "right"):
        assert at("one", "completed") < at(side, "running")
        assert at(side, "completed") < at("join", "running")
    flow = next(e for e in events if e["type"] == "flow")
    needs = {step["id"]: step["needs"] for step in flow["steps"]}
    assert needs == {"one": [], "left": ["one"], "right": ["one"], "join": ["left", "right"]}
    assert (await tally(bench, alice))["calls"] == {"add": 1, "meet": 2, "echo": 1}


async def test_one_step_at_a_time_the_meeting_fails(bench: Bench) -> None:
    """The control of the test above: with `parallel: 1` (a tag's session budget) the
    two steps cannot overlap, and the first to run waits alone."""
    one_at_a_time = {
        "tag": "one_at_a_time",
        "kind": "function",
        "payload": {"config": {"assigned_users": ["alice"], "session_budgets": {"parallel": 1}}},
    }
    alice = caller(FAN, one_at_a_time)
    result = await run_flow(bench, alice, "fan", {"wait": 1})
    assert result.state is SessionState.FAILED
    assert result.text is not None
    assert re.fullmatch(
        r"step '(left|right)' \(ops__meet\) failed: \1 waited 1 s in r2 alone", result.text
    ), result.text
    # The flow stopped there: the other side never started, nor the join.
    assert (await tally(bench, alice))["calls"] == {"add": 1, "meet": 1}


def _retrying(tool: str, args: dict[str, Any], **step: Any) -> dict[str, Any]:
    return flow_tag(
        "again",
        {
            "steps": [
                {
                    "id": "fetch",
                    "tool": tool,
                    "args": args,
                    "on_error": "retry",
                    "retry": {"attempts": 3, "backoff": 0},
                    **step,
                }
            ]
        },
    )


async def test_a_read_only_step_is_retried_until_it_succeeds(bench: Bench) -> None:
    alice = caller(_retrying("ops__flaky", {"name": "once", "fails": 1}))
    result = await run_flow(bench, alice, "again")
    assert result.state is SessionState.COMPLETED, result.text
    assert result.text == "attempt 2"  # no output: the last step's text
    assert (await tally(bench, alice))["attempts"] == {"once": 2}
    events = await bench.events(result.session_id)
    keys = [e["key"] for e in events if e["type"] == "intent"]
    assert keys == [
        f"{result.session_id}:flow:again.fetch.1",
        f"{result.session_id}:flow:again.fetch.2",
    ]
    outcomes = [(e["key"][-2:], e["is_error"]) for e in events if e["type"] == "result"]
    assert outcomes == [(".1", True), (".2", False)]
    state = await bench.store.get_flow_state(result.session_id, "again")
    assert steps_status(state) == {"fetch": "completed"}
    assert state is not None
    assert state["steps"]["fetch"]["attempt"] == 2


async def test_retries_wait_their_backoff_up_to_max_backoff(bench: Bench) -> None:
    retry = {"attempts": 4, "backoff": 0.5, "max_backoff": 0.5}
    alice = caller(_retrying("ops__flaky", {"name": "thrice", "fails": 3}, retry=retry))
    began = anyio.current_time()
    result = await run_flow(bench, alice, "again")
    waited = anyio.current_time() - began
    assert result.state is SessionState.COMPLETED, result.text
    assert result.text == "attempt 4"
    assert (await tally(bench, alice))["attempts"] == {"thrice": 4}
    # 0.5 s before each of attempts 2, 3 and 4: capped, not 0.5 + 1 + 2.
    assert 1.5 <= waited < 3.0, waited


async def test_an_unsafe_retry_fails_the_session_before_any_step(bench: Bench) -> None:
    flow = flow_tag(
        "again",
        {
            "steps": [
                {"id": "first", "tool": "ops__add", "args": {"a": 1, "b": 2}},
                {
                    "id": "w",
                    "tool": "ops__write",
                    "args": {"what": "x"},
                    "on_error": "retry",
                    "retry": {"attempts": 2, "backoff": 0},
                },
            ]
        },
    )
    alice = caller(flow)
    result = await run_flow(bench, alice, "again")
    assert result.state is SessionState.FAILED
    assert result.text == (
        "step 'w': on_error is retry, but ops__write is neither read-only nor idempotent, so "
        "a retry may act twice; write retry_unsafe: true to retry it anyway"
    )
    assert result.calls == ()
    events = await bench.events(result.session_id)
    assert [e for e in events if e["type"] in ("intent", "flow", "step")] == []
    assert await bench.store.get_flow_state(result.session_id, "again") is None
    assert (await tally(bench, alice))["calls"] == {}


async def test_retry_unsafe_retries_a_tool_that_may_act_twice(bench: Bench) -> None:
    alice = caller(_retrying("ops__write", {"what": "x"}, retry_unsafe=True))
    result = await run_flow(bench, alice, "again")
    assert result.state is SessionState.FAILED
    assert result.text == "step 'fetch' (ops__write) failed: could not write 'x'"
    assert (await tally(bench, alice))["calls"] == {"write": 3}
    events = await bench.events(result.session_id)
    keys = [e["key"].rsplit(":", 1)[1] for e in events if e["type"] == "intent"]
    assert keys == ["again.fetch.1", "again.fetch.2", "again.fetch.3"]
    state = await bench.store.get_flow_state(result.session_id, "again")
    assert steps_status(state) == {"fetch": "failed"}


def _expecting(on_error: str) -> dict[str, Any]:
    return flow_tag(
        "checked",
        {
            "steps": [
                {
                    "id": "check",
                    "tool": "ops__add",
                    "args": {"a": 1, "b": 1},
                    "expect": "result.structured.sum == 3",
                    "on_error": on_error,
                },
                {"id": "next", "tool": "ops__echo", "args": {"saw": "{{ steps.check.status }}"}},
            ],
            "output": "check {{ steps.check.status }}: {{ steps.check.error }}",
        },
    )


async def test_an_expect_that_fails_aborts_the_flow(bench: Bench) -> None:
    alice = caller(_expecting("abort"))
    result = await run_flow(bench, alice, "checked")
    assert result.state is SessionState.FAILED
    assert result.text == (
        "step 'check' (ops__add) failed: expect 'result.structured.sum == 3' was false for "
        "its result"
    )
    state = await bench.store.get_flow_state(result.session_id, "checked")
    assert steps_status(state) == {"check": "failed"}
    assert state is not None
    assert state["status"] == "failed"
    assert (await tally(bench, alice))["calls"] == {"add": 1}


async def test_an_expect_that_fails_with_skip_goes_on(bench: Bench) -> None:
    alice = caller(_expecting("skip"))
    result = await run_flow(bench, alice, "checked")
    assert result.state is SessionState.COMPLETED, result.text
    assert result.text == (
        "check failed: expect 'result.structured.sum == 3' was false for its result"
    )
    state = await bench.store.get_flow_state(result.session_id, "checked")
    assert steps_status(state) == {"check": "failed", "next": "completed"}
    assert state is not None
    assert state["steps"]["next"]["view"]["structured"]["args"] == {"saw": "failed"}
    assert (await tally(bench, alice))["calls"] == {"add": 1, "echo": 1}


async def test_an_input_that_does_not_fit_is_refused_at_start(bench: Bench) -> None:
    engine = bench.engine(None)
    with pytest.raises(InvalidFlowInput, match=r"^the input of flow 'calc' does not fit: .*'b'"):
        await engine.start(caller(CALC), "", flow="calc", inputs={"a": 1})
    with pytest.raises(InvalidFlowInput, match="the input of flow 'calc' does not fit"):
        await engine.start(caller(CALC), "", flow="calc", inputs={"a": "1", "b": 2})


MISFIT = flow_tag(
    "misfit",
    {
        "inputs": {"type": "object", "properties": {"n": {"type": "integer", "default": "five"}}},
        "steps": [{"id": "s", "tool": "ops__echo", "args": {"n": "{{ input.n }}"}}],
    },
)
"""A flow whose input's declared default does not fit the input's own schema."""


async def test_start_checks_the_input_with_its_defaults_filled_in(bench: Bench) -> None:
    engine = bench.engine(None)
    with pytest.raises(InvalidFlowInput, match="n: 'five' is not of type 'integer'"):
        await engine.start(caller(MISFIT), "", flow="misfit", inputs={})


async def test_a_flow_the_caller_does_not_have_is_unknown(bench: Bench) -> None:
    engine = bench.engine(None)
    with pytest.raises(UnknownFlow, match=r"^no flow 'nope' is available to you$"):
        await engine.start(caller(CALC), "", flow="nope", inputs={})
    # calc is alice's: bob, with the same tools, has no such flow.
    with pytest.raises(UnknownFlow, match=r"^no flow 'calc' is available to you$"):
        await engine.start(caller(CALC, user="bob"), "", flow="calc", inputs={"a": 1, "b": 2})


LEAK = flow_tag(
    "leak",
    {
        "steps": [
            {"id": "first", "tool": "ops__add", "args": {"a": 1, "b": 2}},
            {"id": "tell", "tool": "ops__secret", "after": ["first"]},
            {"id": "after", "tool": "ops__echo", "args": {"t": "{{ steps.tell.text }}"}},
        ]
    },
)


async def test_a_step_whose_tool_the_caller_may_not_use_is_refused(bench: Bench) -> None:
    alice = caller(LEAK)
    result = await run_flow(bench, alice, "leak")
    assert result.state is SessionState.FAILED
    assert result.text == "step 'tell' (ops__secret) failed: no such tool is available to you"
    refused = [call for call in result.calls if call.tool == "ops__secret"]
    assert len(refused) == 1
    assert refused[0].decision == "denied"  # by the operator role's denied_tools
    assert not refused[0].ok
    assert [call.tool for call in result.calls] == ["ops__add", "ops__secret"]
    assert (await tally(bench, alice))["calls"] == {"add": 1}
    state = await bench.store.get_flow_state(result.session_id, "leak")
    assert steps_status(state) == {"first": "completed", "tell": "failed"}


async def test_a_refused_step_is_not_retried(bench: Bench) -> None:
    alice = caller(_retrying("ops__secret", {}, retry_unsafe=True))
    result = await run_flow(bench, alice, "again")
    assert result.state is SessionState.FAILED
    assert result.text == "step 'fetch' (ops__secret) failed: no such tool is available to you"
    assert [(call.tool, call.ok) for call in result.calls] == [("ops__secret", False)]
    assert result.calls[0].decision == "denied"
    assert (await tally(bench, alice))["calls"] == {}


FIVE = flow_tag(
    "five",
    {
        "inputs": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
        "steps": [
            {"id": "sum", "tool": "ops__add", "args": {"a": "{{ input.a }}", "b": "{{ input.b }}"}},
            *(
                {
                    "id": side,
                    "tool": "ops__meet",
                    "args": {"room": "five-{{ steps.sum.text }}", "who": side, "wait": 10},
                }
                for side in ("left", "right")
            ),
            {
                "id": "fetch",
                "tool": "ops__flaky",
                "args": {"name": "five-{{ steps.sum.structured.sum }}", "fails": 1},
                "expect": "result.structured.attempt == 2",
                "on_error": "retry",
                "retry": {"attempts": 3, "backoff": 0.01},
            },
            {
                "id": "record",
                "tool": "ops__write",
                "when": "steps.fetch.status == 'completed' and steps.left.status == 'completed'",
                "args": {"what": "{{ steps.left.text }} / {{ steps.right.text }}"},
                "on_error": "skip",
            },
        ],
        "output": {
            "sum": "{{ steps.sum.structured.sum }}",
            "fetched": "{{ steps.fetch.text }}",
            "record": "{{ steps.record.status }}: {{ steps.record.error }}",
        },
    },
)


async def test_one_flow_of_five_steps_with_every_kind(bench: Bench) -> None:
    """Templated arguments, two steps at once, a read-only step retried until its expect
    holds, and a `when` guarding a step whose tool may not be retried: it fails once and
    the flow goes on (on_error skip)."""
    alice = caller(FIVE)
    result = await run_flow(bench, alice, "five", {"a": 20, "b": 22})
    assert result.state is SessionState.COMPLETED, result.text
    assert result.text is not None
    assert json.loads(result.text) == {
        "sum": 42,
        "fetched": "attempt 2",
        "record": "failed: could not write 'left met right / right met left'",
    }
    counted = await tally(bench, alice)
    assert counted["calls"] == {"add": 1, "meet": 2, "flaky": 2, "write": 1}
    assert counted["attempts"] == {"five-42": 2}
    events = await bench.events(result.session_id)
    keys = [e["key"].rsplit(":", 1)[1] for e in events if e["type"] == "intent"]
    assert sorted(keys) == sorted(
        f"five.{step}.{n}"
        for step, n in (
            ("sum", 1),
            ("left", 1),
            ("right", 1),
            ("fetch", 1),
            ("fetch", 2),
            ("record", 1),
        )
    )
    state = await bench.store.get_flow_state(result.session_id, "five")
    assert steps_status(state) == {
        "sum": "completed",
        "left": "completed",
        "right": "completed",
        "fetch": "completed",
        "record": "failed",
    }
