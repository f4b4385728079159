"""The engine's loop with a scripted planner, a real echo upstream over stdio, the call
service and the in-memory state store: what the model asks for runs only as the caller's
tags permit, every step is on the session's stream, and each limit ends the session."""

from __future__ import annotations

import json
import time
from contextlib import aclosing
from typing import Any

import anyio
import pytest

from gateway.calls import CallRecord, Completed, ToolCall
from gateway.engine.budgets import Budgets, Spent
from gateway.engine.planners.base import Answer, Turn, Usage
from gateway.engine.states import SessionState
from gateway.errors import ConfigError, SessionNotWaiting, UnknownSession
from gateway.principal import Principal
from gateway.state.base import Stream
from gateway.tags.loader import tagset_from_texts
from gateway.tags.resolve import resolve
from tests.engine.helpers import ACME, ALICE, BOB, Bench, Recording, envelope, reply, tool
from tests.upstreams.helpers import text

pytestmark = pytest.mark.anyio


async def test_a_call_then_a_reply(bench: Bench) -> None:
    planner = Recording([tool("echo__echo", n=3), reply("three")])
    result = await bench.session(planner)
    assert (result.state, result.text) == (SessionState.COMPLETED, "three")
    assert [(c.tool, c.decision, c.ok) for c in result.calls] == [("echo__echo", "allowed", True)]
    assert "[('n', 3)]" in planner.told()[0]
    assert "untrusted data" in planner.told()[0]
    types = [event["type"] for event in await bench.events(result.session_id)]
    assert types == [
        "accepted",
        "state",
        "envelope",
        "intent",
        "result",
        "envelope",
        "reply",
        "state",
    ]
    snapshot = await bench.store.get_session_state(result.session_id)
    assert snapshot is not None
    assert snapshot["state"] == "completed"
    assert snapshot["spent"]["turns"] == 2
    assert snapshot["spent"]["tool_calls"] == 1


async def test_the_model_is_shown_only_the_permitted_tools_and_the_callers_prompt(
    bench: Bench,
) -> None:
    planner = Recording([reply()])
    await bench.session(planner)
    turn = planner.turns[0]
    names = {info.name for info in turn.tools}
    assert "echo__echo" in names
    assert "echo__crash" not in names  # denied
    assert "echo__lookup" not in names  # not granted
    assert "You help customers." in turn.system


async def test_a_refused_call_is_never_run_and_counts_as_a_violation(bench: Bench) -> None:
    before = await bench.pid()
    planner = Recording(
        [
            tool("echo__crash"),  # denied: it would end the upstream's process
            tool("echo__lookup", journal="x"),  # not granted
            tool("echo__echo", n=50),  # out of scope
            reply(),
        ]
    )
    result = await bench.session(planner)
    assert result.state is SessionState.COMPLETED
    assert await bench.pid() == before  # echo__crash never reached the upstream
    assert [(c.tool, c.decision) for c in result.calls] == [
        ("echo__crash", "denied"),
        ("echo__lookup", "not_granted"),
        ("echo__echo", "out_of_scope"),
    ]
    told = planner.told()
    assert told[0].endswith("refused: no such tool is available to you")
    assert told[1].endswith("refused: no such tool is available to you")
    assert told[2].endswith("refused: the arguments are outside what you may use")
    assert result.spent["violations"] == 3


async def test_refusals_beyond_the_violation_budget_end_the_session(bench: Bench) -> None:
    planner = Recording([tool("echo__crash"), tool("echo__lookup"), reply()])
    result = await bench.session(planner, budgets=Budgets(violations=1))
    assert result.state is SessionState.FAILED
    assert result.text == "budget violations exhausted: 2 refusals of 1 refusals"


async def test_an_invalid_answer_gets_repair_turns_then_fails(bench: Bench) -> None:
    fixed = Recording([{"kind": "reply"}, reply("fixed")])
    result = await bench.session(fixed)
    assert (result.state, result.text) == (SessionState.COMPLETED, "fixed")
    assert "reply.text: Field required" in fixed.told()[0]
    broken = Recording([{"kind": "dance"}] * 3 + [reply()])
    result = await bench.session(broken)
    assert result.state is SessionState.FAILED
    assert result.text is not None
    assert result.text.startswith("the model gave no valid envelope in 3 turns")
    assert result.spent["turns"] == 3


async def test_the_turn_budget_ends_the_session(bench: Bench) -> None:
    planner = Recording([tool("echo__echo", n=n) for n in range(5)])
    result = await bench.session(planner, budgets=Budgets(turns=2))
    assert result.state is SessionState.FAILED
    assert result.text == "budget turns exhausted: 2 turns of 2 turns"
    events = await bench.events(result.session_id)
    assert {"type": "budget", "name": "turns", "used": 2, "limit": 2} in events


async def test_a_tag_tightens_the_budgets_and_never_loosens_them(bench: Bench) -> None:
    tight = ACME.replace(
        '        trusted_output: ["echo__*"]',
        '        trusted_output: ["echo__*"]\n        session_budgets: {turns: 2, tool_calls: 500}',
    )
    alice = resolve(tagset_from_texts({"acme.yaml": tight}), Principal("alice", "acme"))
    assert alice.session_limits() == {"turns": 2, "tool_calls": 500}
    planner = Recording([tool("echo__echo", n=n) for n in range(5)])
    result = await bench.session(planner, caller=alice, budgets=Budgets(turns=9, tool_calls=1))
    assert result.state is SessionState.FAILED
    # turns: the tag's 2 under gateway.yaml's 9; tool_calls: gateway.yaml's 1 stays.
    assert result.text == "budget tool_calls exhausted: 1 calls of 1 calls"
    result = await bench.session(
        Recording([tool("echo__echo", n=n) for n in range(5)]), caller=alice
    )
    assert result.text == "budget turns exhausted: 2 turns of 2 turns"


async def test_the_same_call_asked_again_and_again_ends_the_session(bench: Bench) -> None:
    planner = Recording([tool("echo__echo", n=1)] * 5)
    result = await bench.session(planner)
    assert result.state is SessionState.FAILED
    assert result.text is not None
    assert result.text.startswith("budget repeats exhausted: 4 times the same call")
    assert len(result.calls) == 3  # `repeats` of them ran


async def test_parallel_calls_each_return_whatever_the_others_do(bench: Bench) -> None:
    calls = [
        {"tool": "echo__echo", "arguments": '{"n": 1}'},
        {"tool": "echo__reject", "arguments": "{}"},
        {"tool": "echo__echo", "arguments": '{"n": 2}'},
    ]
    for mode in ("parallel", "sequential"):
        planner = Recording([envelope("tools", mode=mode, calls=calls), reply()])
        result = await bench.session(planner)
        assert result.state is SessionState.COMPLETED
        told = planner.told()[0]
        assert "[1] echo__echo returned a result" in told
        assert "[2] echo__reject: failed: " in told
        assert "[3] echo__echo returned a result" in told
        assert [c.ok for c in result.calls] == [True, False, True]


async def test_a_call_below_the_confidence_threshold_is_asked_about(bench: Bench) -> None:
    before = await bench.pid()
    planner = Recording([{**tool("echo__crash"), "confidence": 0.2}])
    result = await bench.session(planner, confidence=0.5)
    assert result.state is SessionState.INPUT_REQUIRED
    assert result.text is not None
    assert "confidence 0.20" in result.text
    assert result.calls == ()
    assert await bench.pid() == before


async def test_a_question_waits_for_the_caller(bench: Bench) -> None:
    result = await bench.session(Recording([envelope("clarify", question="Which order?")]))
    assert (result.state, result.text) == (SessionState.INPUT_REQUIRED, "Which order?")


async def test_without_a_planner_a_session_is_rejected_saying_how_to_configure_one(
    bench: Bench,
) -> None:
    result = await bench.session(None)
    assert result.state is SessionState.REJECTED
    assert result.text is not None
    assert "engine.planner" in result.text


async def test_cancelling_a_session_cancels_its_call_upstream(bench: Bench) -> None:
    counted = await bench.service.call(ALICE, ToolCall("echo__cancelled", {}))
    assert isinstance(counted, Completed)
    before = int(text(counted.result))
    engine = bench.engine(Recording([tool("echo__sleep", seconds=10)]))
    session = await engine.start(ALICE, "wait")
    async with anyio.create_task_group() as tasks:

        async def run() -> None:
            await engine.run(session)

        tasks.start_soon(run)
        with anyio.fail_after(10):
            async with aclosing(bench.store.follow(session.id, Stream.EVENTS)) as batches:
                async for batch in batches:
                    if any(event.data["type"] == "intent" for event in batch.events):
                        break
        await anyio.sleep(0.2)  # the call is upstream by now
        tasks.cancel_scope.cancel()
    assert session.state is SessionState.CANCELED
    events = await bench.events(session.id)
    assert events[-1]["to"] == "canceled"
    with anyio.fail_after(10):
        while True:  # the notification travels on its own
            counted = await bench.service.call(ALICE, ToolCall("echo__cancelled", {}))
            assert isinstance(counted, Completed)
            if int(text(counted.result)) == before + 1:
                break
            await anyio.sleep(0.05)


def plan(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return envelope("plan", goal="a test", steps=list(steps), **fields)


def step(id: str, name: str, **arguments: Any) -> dict[str, Any]:
    return {"id": id, "tool": name, "arguments": json.dumps(arguments)}


async def test_a_plans_steps_run_in_order_taking_earlier_outputs(bench: Bench) -> None:
    planner = Recording(
        [
            plan(
                step("first", "echo__echo", n=3),
                step("second", "echo__echo", n={"$step": "first", "path": "/structuredContent/n"}),
            ),
            reply(),
        ]
    )
    result = await bench.session(planner)
    assert result.state is SessionState.COMPLETED
    told = planner.told()[0]
    assert told.count("[('n', 3)]") == 2
    events = await bench.events(result.session_id)
    committed = next(e for e in events if e["type"] == "plan")
    assert [s["id"] for s in committed["steps"]] == ["first", "second"]
    intents = [e["arguments"] for e in events if e["type"] == "intent"]
    assert intents == [{"n": 3}, {"n": 3}]


async def test_a_step_that_does_not_complete_stops_the_rest(bench: Bench) -> None:
    for first, why in (
        (step("first", "echo__crash"), "[first] echo__crash: refused"),
        (step("first", "echo__reject"), "[first] echo__reject: failed"),
    ):
        planner = Recording([plan(first, step("second", "echo__echo", n=1)), reply()])
        result = await bench.session(planner)
        told = planner.told()[0]
        assert why in told
        assert "[second] not run: an earlier step did not complete" in told
        assert [c.tool for c in result.calls] == [first["tool"]]


async def test_a_reference_to_nothing_in_an_output_stops_the_plan(bench: Bench) -> None:
    planner = Recording(
        [
            plan(
                step("first", "echo__echo", n=1),
                step("second", "echo__echo", n={"$step": "first", "path": "/nothing/here"}),
            ),
            reply(),
        ]
    )
    result = await bench.session(planner)
    assert (
        "[second] not run: nothing at '/nothing/here' in the output of step 'first'"
        in (planner.told()[0])
    )
    assert len(result.calls) == 1


async def test_a_plan_to_follow_a_flow_the_caller_has_not_is_not_run(bench: Bench) -> None:
    planner = Recording([envelope("plan", goal="refund", flow="refund"), reply()])
    result = await bench.session(planner)
    assert result.state is SessionState.COMPLETED
    assert "Not run: no flow 'refund' is available to you" in planner.told()[0]
    assert result.calls == ()


async def test_a_question_answered_goes_on_from_the_stored_session(bench: Bench) -> None:
    planner = Recording(
        [envelope("clarify", question="Which n?"), tool("echo__echo", n=4), reply("4")]
    )
    engine = bench.engine(planner)
    session = await engine.start(ALICE, "echo a number")
    with anyio.fail_after(30):
        asked = await engine.run(session)
    assert asked.state is SessionState.INPUT_REQUIRED
    # As another request (another replica) would: from the store, as the same caller.
    stored = await bench.engine(planner).load(session.id, ALICE)
    assert stored.state is SessionState.INPUT_REQUIRED
    assert stored.transcript == session.transcript
    with anyio.fail_after(30):
        done = await bench.engine(planner).answer(stored, "four")
    assert (done.state, done.text) == (SessionState.COMPLETED, "4")
    assert "The user answered: four" in planner.told()[0]
    assert done.spent["turns"] == 3


async def test_an_unsure_call_answered_is_told_it_did_not_run(bench: Bench) -> None:
    planner = Recording([{**tool("echo__echo", n=1), "confidence": 0.1}, reply()])
    engine = bench.engine(planner)
    session = await engine.start(ALICE, "echo")
    with anyio.fail_after(30):
        await engine.run(session)
        done = await engine.answer(session, "yes, go ahead")
    assert done.state is SessionState.COMPLETED
    assert planner.told()[0].startswith("That was not run: you were not sure enough")
    assert done.calls == ()


async def test_a_session_is_only_its_own_callers(bench: Bench) -> None:
    engine = bench.engine(Recording([reply()]))
    session = await engine.start(ALICE, "hi")
    with anyio.fail_after(30):
        await engine.run(session)
    with pytest.raises(UnknownSession, match="no session"):
        await engine.load(session.id, BOB)
    with pytest.raises(UnknownSession):
        await engine.load("s_nothing", ALICE)
    finished = await engine.load(session.id, ALICE)
    with pytest.raises(SessionNotWaiting, match="is completed"):
        await engine.answer(finished, "more")


async def test_a_session_may_not_start_another_session(bench: Bench) -> None:
    told: list[CallRecord] = []
    stop = bench.service.on_outcome(told.append)
    try:
        planner = Recording(
            [tool("gateway__run_session", message="again"), tool("echo__echo", n=1), reply()]
        )
        result = await bench.session(planner)
    finally:
        stop()
    assert [(c.tool, c.decision) for c in result.calls] == [
        ("gateway__run_session", "nested_session"),
        ("echo__echo", "allowed"),
    ]
    assert planner.told()[0].endswith("refused: a session may not start another session here")
    assert len({c.key for c in result.calls}) == 2  # each call its own idempotency key
    assert [(r.call.tool, r.decision) for r in told] == [  # audited as any refusal
        ("gateway__run_session", "nested_session"),
        ("echo__echo", "allowed"),
    ]


def test_waiting_for_the_caller_is_not_the_sessions_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    spent = Spent(seconds=100.0, _since=clock[0])
    clock[0] += 10  # ten seconds of work
    spent.pause()
    assert spent.wall() == 110.0
    clock[0] += 3600  # an hour waiting for the caller
    assert spent.wall() == 110.0
    spent.resume()
    clock[0] += 5
    assert spent.wall() == 115.0


async def test_an_answer_to_a_session_without_a_planner_fails_it(bench: Bench) -> None:
    engine = bench.engine(Recording([envelope("clarify", question="Which?")]))
    session = await engine.start(ALICE, "hi")
    with anyio.fail_after(30):
        await engine.run(session)
    stored = await bench.engine(None).load(session.id, ALICE)
    done = await bench.engine(None).answer(stored, "this one")
    assert done.state is SessionState.FAILED  # not rejected: it had started
    assert done.text is not None
    assert "no planner is configured" in done.text


async def test_an_answer_the_store_cannot_keep_is_invalid_not_a_crash(bench: Bench) -> None:
    nan = {
        "kind": "tool",
        "confidence": float("nan"),
        "reasoning": "x",
        "call": {"tool": "t", "arguments": {}},
    }
    result = await bench.session(Recording([nan, reply("fine")]))
    assert (result.state, result.text) == (SessionState.COMPLETED, "fine")


async def test_a_failure_inside_the_loop_ends_the_session_as_failed(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = bench.engine(Recording([tool("echo__echo", n=1), reply()]))

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(engine.turns.actor, "act", broken)
    session = await engine.start(ALICE, "hi")
    with anyio.fail_after(30):
        result = await engine.run(session)
    assert (result.state, result.text) == (SessionState.FAILED, "an internal error (logged)")
    snapshot = await bench.store.get_session_state(session.id)
    assert snapshot is not None
    assert snapshot["state"] == "failed"


class Costly(Recording):
    """A recording planner whose every turn uses 600 tokens and 0.6 USD."""

    async def decide(self, turn: Turn) -> Answer:
        answer = await super().decide(turn)
        return Answer(answer.id, answer.data, Usage(500, 100, 0, 0, 0.6))


@pytest.mark.parametrize(
    ("budgets", "said"),
    [
        (Budgets(tokens=1000), "budget tokens exhausted: 1,200 tokens of 1,000 tokens"),
        (Budgets(cost_usd=1.0), "budget cost_usd exhausted: 1.20 USD of 1.00 USD"),
    ],
    ids=["tokens", "cost"],
)
async def test_token_and_cost_budgets_end_the_session(
    bench: Bench, budgets: Budgets, said: str
) -> None:
    planner = Costly([tool("echo__echo", n=n) for n in range(1, 5)])
    result = await bench.session(planner, budgets=budgets)
    assert (result.state, result.text) == (SessionState.FAILED, said)
    assert result.spent["turns"] == 2


async def test_the_wall_clock_budget_ends_the_session(bench: Bench) -> None:
    engine = bench.engine(Recording([reply()]), budgets=Budgets(wall_seconds=900))
    session = await engine.start(ALICE, "hi")
    session.spent.seconds = 901.0  # as a resumed session that had worked that long
    with anyio.fail_after(30):
        result = await engine.run(session)
    assert result.state is SessionState.FAILED
    assert result.text is not None
    assert result.text.startswith("budget wall_seconds exhausted: 901.")


async def test_a_call_past_the_sessions_call_timeout_is_cancelled_and_told(bench: Bench) -> None:
    planner = Recording([tool("echo__sleep", seconds=3), reply()])
    result = await bench.session(planner, budgets=Budgets(call_timeout=0.3))
    assert result.state is SessionState.COMPLETED
    assert planner.told()[0] == "echo__sleep: failed: no answer within 0.3 s (cancelled)"
    events = await bench.events(result.session_id)
    assert [e["outcome"] for e in events if e["type"] == "result"] == ["timeout"]


async def test_the_wall_clock_budget_bounds_a_call_under_way(bench: Bench) -> None:
    planner = Recording([tool("echo__sleep", seconds=20), reply()])
    result = await bench.session(planner, budgets=Budgets(wall_seconds=1, call_timeout=120))
    assert result.state is SessionState.FAILED
    assert result.text is not None
    assert result.text.startswith("budget wall_seconds exhausted: 1.")
    events = await bench.events(result.session_id)
    assert [e["outcome"] for e in events if e["type"] == "result"] == ["timeout"]
    counted = await bench.service.call(ALICE, ToolCall("echo__cancelled", {}))
    assert isinstance(counted, Completed)
    assert text(counted.result) == "1", "the upstream saw its call cancelled"


async def test_waiting_on_a_running_session_returns_once_it_stops(bench: Bench) -> None:
    engine = bench.engine(Recording([tool("echo__sleep", seconds=0.5), reply("slept")]))
    session = await engine.start(ALICE, "sleep")
    waited: list[Any] = []

    async def wait() -> None:
        copy = await engine.load(session.id, ALICE)
        assert copy.state in (SessionState.SUBMITTED, SessionState.WORKING)
        waited.append(await engine.wait(copy))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(wait)
            ran = await engine.run(session)
    assert (ran.state, ran.text) == (SessionState.COMPLETED, "slept")
    assert (waited[0].state, waited[0].text) == (SessionState.COMPLETED, "slept")
    again = await engine.wait(await engine.load(session.id, ALICE))
    assert again.state is SessionState.COMPLETED, "an ended session's result, at once"


async def test_a_reply_to_what_a_session_showed_is_refused_once_it_moved_on(
    bench: Bench,
) -> None:
    script = [envelope("clarify", question="Q1?"), envelope("clarify", question="Q2?"), reply()]
    engine = bench.engine(Recording(script))
    session = await engine.start(ALICE, "ask twice")
    with anyio.fail_after(30):
        first = await engine.run(session)
        second = await engine.respond(first, ALICE, "answer", "one")  # another client's
    assert second.text == "Q2?"
    with pytest.raises(SessionNotWaiting, match="already answered"):
        await engine.respond(first, ALICE, "answer", "meant for Q1")
    with anyio.fail_after(30):
        done = await engine.respond(second, ALICE, "answer", "two")
    assert done.state is SessionState.COMPLETED


def test_a_tag_budget_the_engine_cannot_hold_is_a_load_error() -> None:
    nothing = ACME.replace(
        '        trusted_output: ["echo__*"]',
        '        trusted_output: ["echo__*"]\n        session_budgets: {violations: 0}',
    )
    with pytest.raises(ConfigError, match="violations"):
        tagset_from_texts({"acme.yaml": nothing})
