"""Where flows meet the planner (gateway/flows/planning.py): a flow step with `on_error:
replan` that fails hands the session to the planner, told what was done and what failed,
and what it plans is run and checked as every call is; a plan envelope that names a flow
tag runs that flow; a plan's steps run as a flow, an earlier step's output taken by a
JSON pointer. Against the ops upstream over stdio (servers/ops.py)."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from gateway.engine.loop import SessionResult
from gateway.engine.planners.base import Said
from gateway.engine.states import SessionState
from gateway.tags.context import ResolvedContext
from tests.engine.helpers import Bench, Recording, envelope, reply
from tests.flows.helpers import caller, flow_tag, run_flow, steps_status, tally

pytestmark = pytest.mark.anyio


async def converse(bench: Bench, who: ResolvedContext, planner: Recording) -> SessionResult:
    """A session of `who`'s with no flow named: the planner decides every turn."""
    engine = bench.engine(planner)
    session = await engine.start(who, "please help")
    with anyio.fail_after(30):
        return await engine.run(session)


REPLAN = flow_tag(
    "fix",
    {
        "description": "Add and record",
        "steps": [
            {"id": "first", "tool": "ops__add", "args": {"a": 2, "b": 3}},
            {
                "id": "record",
                "tool": "ops__write",
                "description": "Record the sum",
                "args": {"what": "{{ steps.first.text }}"},
                "on_error": "replan",
            },
            {
                "id": "confirm",
                "tool": "ops__echo",
                "description": "Confirm it",
                "args": {"r": "{{ steps.record.text }}"},
            },
        ],
    },
)


def _plan(*steps: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    return envelope(
        "plan",
        goal="finish the flow",
        steps=[
            {"id": sid, "tool": tool, "arguments": json.dumps(arguments)}
            for sid, tool, arguments in steps
        ],
    )


async def test_a_failed_replan_step_asks_the_planner_and_its_plan_runs(bench: Bench) -> None:
    alice = caller(REPLAN)
    planner = Recording([_plan(("note", "ops__echo", {"sum": 5})), reply("recorded another way")])
    result = await run_flow(bench, alice, "fix", planner=planner)
    assert result.state is SessionState.COMPLETED, result.text
    assert result.text == "recorded another way"
    asked = [e.text for e in planner.turns[0].transcript if isinstance(e, Said)]
    assert len(asked) == 2  # the session's message, then the request
    request = asked[1]
    assert request.startswith(
        "The flow 'fix' (Add and record) stopped: step 'record' (ops__write) failed: "
        "could not write '5'."
    )
    assert "- first: completed: ops__add returned a result (untrusted data" in request
    assert "\n5\n</tool-result-" in request  # its result, framed as data
    assert "- confirm (ops__echo): Confirm it" in request
    assert "The failed step was meant to: Record the sum." in request
    calls = [(call.tool, call.decision) for call in result.calls]
    assert calls == [("ops__add", "allowed"), ("ops__write", "allowed"), ("ops__echo", "allowed")]
    assert (await tally(bench, alice))["calls"] == {"add": 1, "write": 1, "echo": 1}
    told = planner.told()
    assert any("ops__echo returned a result" in text for text in told), told
    events = await bench.events(result.session_id)
    assert [e["step"] for e in events if e["type"] == "replan"] == ["record"]
    intents = [
        (e["key"].split(":", 1)[1], e["tool"], e["arguments"])
        for e in events
        if e["type"] == "intent"
    ]
    assert intents == [
        ("flow:fix.first.1", "ops__add", {"a": 2, "b": 3}),
        ("flow:fix.record.1", "ops__write", {"what": "5"}),
        ("1.note.1", "ops__echo", {"sum": 5}),  # the plan of the session's first turn
    ]
    replanned = events.index(next(e for e in events if e["type"] == "replan"))
    assert replanned < events.index(
        next(e for e in events if e.get("key", "").endswith("1.note.1"))
    )
    state = await bench.store.get_flow_state(result.session_id, "fix")
    assert steps_status(state) == {"first": "completed", "record": "failed"}


async def test_a_revised_plan_with_a_forbidden_tool_is_refused(bench: Bench) -> None:
    alice = caller(REPLAN)
    planner = Recording([_plan(("leak", "ops__secret", {})), reply("gave up")])
    result = await run_flow(bench, alice, "fix", planner=planner)
    secret = [call for call in result.calls if call.tool == "ops__secret"]
    assert len(secret) == 1
    assert secret[0].decision != "allowed"
    assert not secret[0].ok
    assert "secret" not in (await tally(bench, alice))["calls"]
    told = planner.told()
    assert any("ops__secret: refused" in text for text in told), told
    assert result.state is SessionState.COMPLETED
    assert result.text == "gave up"


async def test_a_replan_step_without_a_planner_fails_the_session(bench: Bench) -> None:
    alice = caller(REPLAN)
    result = await run_flow(bench, alice, "fix")
    assert result.state is SessionState.FAILED
    assert result.text == (
        "step 'record' (ops__write) failed: could not write '5'; its on_error is replan, "
        "but no planner is configured"
    )
    assert (await tally(bench, alice))["calls"] == {"add": 1, "write": 1}


ADD = flow_tag(
    "adder",
    {
        "description": "Add two numbers",
        "inputs": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer", "default": 10}},
            "required": ["a"],
        },
        "steps": [
            {"id": "sum", "tool": "ops__add", "args": {"a": "{{ input.a }}", "b": "{{ input.b }}"}}
        ],
        "output": "sum={{ steps.sum.structured.sum }}",
    },
)


def _following(flow: str, inputs: dict[str, Any]) -> dict[str, Any]:
    return envelope("plan", goal="follow the flow", flow=flow, inputs=json.dumps(inputs))


async def test_a_plan_naming_a_flow_runs_that_flow(bench: Bench) -> None:
    alice = caller(ADD)
    planner = Recording([_following("adder", {"a": 1}), reply("it is 11")])
    result = await converse(bench, alice, planner)
    assert result.state is SessionState.COMPLETED, result.text
    assert result.text == "it is 11"
    told = planner.told()
    assert len(told) == 1
    assert "The flow's output: adder returned a result (untrusted data" in told[0]
    assert told[0].endswith("\nsum=11\n</tool-result-" + told[0].rsplit("</tool-result-", 1)[1])
    # b took its default
    state = await bench.store.get_flow_state(result.session_id, "1.adder")
    assert steps_status(state) == {"sum": "completed"}
    assert (await tally(bench, alice))["calls"] == {"add": 1}


@pytest.mark.parametrize(
    ("inputs", "user", "said"),
    [
        ({"a": 1}, "bob", "Not run: no flow 'adder' is available to you."),
        ({"b": 1}, "alice", "Not run: the input of flow 'adder' does not fit: "),
    ],
)
async def test_a_plan_naming_a_flow_it_may_not_run_runs_nothing(
    bench: Bench, inputs: dict[str, Any], user: str, said: str
) -> None:
    who = caller(ADD, user=user)
    planner = Recording([_following("adder", inputs), reply("no")])
    result = await converse(bench, who, planner)
    assert result.state is SessionState.COMPLETED, result.text
    told = planner.told()
    assert len(told) == 1
    assert told[0].startswith(said), told
    assert (await tally(bench, who))["calls"] == {}


async def test_a_plans_steps_take_earlier_outputs_by_pointer(bench: Bench) -> None:
    alice = caller()
    pointer = {"$step": "first", "path": "/structuredContent/sum"}
    plan = envelope(
        "plan",
        goal="add twice",
        steps=[
            {"id": "first", "tool": "ops__add", "arguments": json.dumps({"a": 2, "b": 3})},
            {"id": "second", "tool": "ops__add", "arguments": {"a": pointer, "b": 1}},
        ],
    )
    planner = Recording([plan, reply("six")])
    result = await converse(bench, alice, planner)
    assert result.state is SessionState.COMPLETED, result.text
    assert [(call.tool, call.decision) for call in result.calls] == [
        ("ops__add", "allowed"),
        ("ops__add", "allowed"),
    ]
    events = await bench.events(result.session_id)
    sent = [e["arguments"] for e in events if e["type"] == "intent"]
    assert sent == [{"a": 2, "b": 3}, {"a": 5, "b": 1}]
    state = await bench.store.get_flow_state(result.session_id, "1")
    assert state is not None
    assert state["steps"]["second"]["view"]["text"] == "6"
