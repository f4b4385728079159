"""Regressions of the flows' review, one test each, against the ops upstream over stdio
(servers/ops.py): a plan naming a flow is held as its steps would be; a dependent step
never reads a need whose attempt is being retried; a budget spent inside a step ends the
session as that budget; a generated plan's steps count against the repeats budget; a
resumed flow that had ended runs nothing more; parallel steps' FLOW writes never lose a
step; a flow cancelled mid-step leaves no stream open."""

from __future__ import annotations

import gc
import json
import warnings
from collections.abc import Mapping
from typing import Any

import anyio
import pytest
import yaml

from gateway.engine.loop import Engine, SessionResult
from gateway.engine.states import SessionState
from gateway.flows.access import flow_of
from gateway.principal import Principal
from gateway.state.base import DEFAULT_STREAM_MAX_LEN, TTLs
from gateway.state.memory import MemoryStore
from gateway.tags.context import ResolvedContext
from gateway.tags.loader import tagset_from_texts
from gateway.tags.resolve import resolve
from tests.engine.helpers import Bench, Recording, envelope, reply
from tests.flows.helpers import ROLE, caller, flow_tag, run_flow, steps_status, tally

pytestmark = pytest.mark.anyio


def operator(config: dict[str, Any], *tags: dict[str, Any]) -> ResolvedContext:
    """alice of acme, whose operator role (helpers.ROLE) has `config` in place of its own
    keys, and who has `tags` besides."""
    payload = ROLE["payload"]
    role = {**ROLE, "payload": {**payload, "config": {**payload["config"], **config}}}
    data = {"users": {"alice": {"roles": ["agent"]}}, "tags": [role, *tags]}
    tagset = tagset_from_texts({"acme.yaml": yaml.safe_dump(data, sort_keys=False)})
    return resolve(tagset, Principal("alice", "acme"))


def budgets(**limits: int) -> dict[str, Any]:
    """A tag that tightens alice's session budgets to `limits`."""
    config = {"assigned_users": ["alice"], "session_budgets": limits}
    return {"tag": "tight", "kind": "function", "payload": {"config": config}}


async def converse(
    bench: Bench, who: ResolvedContext, planner: Recording
) -> tuple[Engine, SessionResult]:
    engine = bench.engine(planner)
    session = await engine.start(who, "please help")
    with anyio.fail_after(30):
        return engine, await engine.run(session)


# 1. A plan that names a flow is held by plan integrity and needs_approval.

RECORD = flow_tag(
    "record",
    {
        "inputs": {"type": "object", "properties": {"x": {"type": "string"}}},
        "steps": [
            {"id": "e", "tool": "ops__echo", "args": {"x": "{{ input.x }}"}},
            {
                "id": "w",
                "tool": "ops__write",
                "args": {"what": "{{ input.x }}"},
                "on_error": "skip",
            },
        ],
    },
)
FOLLOW = envelope("plan", goal="record it", flow="record", inputs=json.dumps({"x": "evil"}))
TAINT = envelope("tool", call={"tool": "ops__add", "arguments": json.dumps({"a": 1, "b": 2})})


@pytest.mark.parametrize(
    ("config", "first", "before", "why"),
    [
        # ops__add's result is not trusted: the session is tainted when the plan comes.
        ({"trusted_output": ["ops__echo"]}, [TAINT], {"add": 1}, "read untrusted data"),
        # Untainted, but the tags ask for approval of ops__write.
        ({"needs_approval": ["ops__write"]}, [], {}, "the user's tags ask for approval"),
    ],
    ids=["tainted", "needs_approval"],
)
async def test_a_plan_naming_a_flow_waits_for_approval_then_runs(
    bench: Bench, config: dict[str, Any], first: list[dict[str, Any]], before: Any, why: str
) -> None:
    alice = operator(config, RECORD)
    planner = Recording([*first, FOLLOW, reply("done")])
    engine, result = await converse(bench, alice, planner)
    assert (result.state, result.waiting) == (SessionState.INPUT_REQUIRED, "approval"), result
    assert result.text is not None
    assert "ops__write" in result.text, result.text
    assert why in result.text, result.text
    assert (await tally(bench, alice))["calls"] == before, "no step of the flow ran"
    with anyio.fail_after(30):
        done = await engine.respond(result, alice, "approve", "")
    assert (done.state, done.text) == (SessionState.COMPLETED, "done")
    assert (await tally(bench, alice))["calls"] == {**before, "echo": 1, "write": 1}
    turn = len(first) + 1
    state = await bench.store.get_flow_state(result.session_id, f"{turn}.record")
    assert steps_status(state) == {"e": "completed", "w": "failed"}
    assert state is not None
    assert state["steps"]["e"]["view"]["structured"]["args"] == {"x": "evil"}


# 2. A dependent step never starts while its need is being retried.

RACE = flow_tag(
    "race",
    {
        "steps": [
            {
                "id": "f",
                "tool": "ops__flaky",
                "args": {"name": "x", "fails": 1},
                "on_error": "retry",
                "retry": {"attempts": 3, "backoff": 1.0},
            },
            # Steps that finish while f waits its backoff: each wakes the scheduler.
            {"id": "q1", "tool": "ops__add", "args": {"a": 1, "b": 1}},
            {"id": "q2", "tool": "ops__add", "args": {"a": 1, "b": 2}, "after": ["q1"]},
            {"id": "q3", "tool": "ops__add", "args": {"a": 1, "b": 3}, "after": ["q2"]},
            {"id": "q4", "tool": "ops__add", "args": {"a": 1, "b": 4}, "after": ["q3"]},
            {
                "id": "d",
                "tool": "ops__echo",
                "args": {"status": "{{ steps.f.status }}", "text": "{{ steps.f.text }}"},
            },
        ]
    },
)


async def test_a_dependent_step_waits_for_its_need_to_be_retried(bench: Bench) -> None:
    alice = caller(RACE)
    result = await run_flow(bench, alice, "race")
    assert result.state is SessionState.COMPLETED, result.text
    state = await bench.store.get_flow_state(result.session_id, "race")
    assert state is not None
    assert state["steps"]["d"]["view"]["structured"]["args"] == {
        "status": "completed",
        "text": "attempt 2",
    }
    events = await bench.events(result.session_id)
    order = [(e["step"], e["status"]) for e in events if e["type"] == "step"]
    assert order.index(("f", "completed")) < order.index(("d", "running")), order
    assert (await tally(bench, alice))["attempts"] == {"x": 2}


# 3. A budget spent inside a flow's step ends the session as that budget.


async def test_a_budget_exhausted_in_a_step_fails_the_session_as_the_budget(
    bench: Bench,
) -> None:
    steps = [{"id": f"s{i}", "tool": "ops__secret", "on_error": "skip"} for i in range(3)]
    alice = caller(flow_tag("refused", {"steps": steps}), budgets(violations=1))
    result = await run_flow(bench, alice, "refused")
    assert result.state is SessionState.FAILED
    assert result.text is not None
    assert result.text.startswith("budget violations exhausted: "), result.text
    assert result.text.endswith(" refusals of 1 refusals"), result.text
    events = await bench.events(result.session_id)
    assert [(e["name"], e["limit"]) for e in events if e["type"] == "budget"] == [("violations", 1)]
    assert (await tally(bench, alice))["calls"] == {}


# 4. A generated plan's steps count against the repeats budget.


async def test_a_repeated_plan_exhausts_the_repeats_budget_as_repeated_calls_do(
    bench: Bench,
) -> None:
    alice = caller(budgets(repeats=2))
    ended = []
    for n, kind in enumerate(("tool", "plan")):
        call = {"tool": "ops__echo", "arguments": json.dumps({"n": n})}
        again = (
            envelope("tool", call=call)
            if kind == "tool"
            else envelope("plan", goal="echo", steps=[{"id": "e", **call}])
        )
        _, result = await converse(bench, alice, Recording([again] * 4 + [reply("looped")]))
        ended.append((kind, result.state, result.text))
    said = "budget repeats exhausted: 3 times the same call of 2 times the same call"
    assert ended == [
        ("tool", SessionState.FAILED, said),
        ("plan", SessionState.FAILED, said),
    ]
    assert (await tally(bench, alice))["calls"] == {"echo": 4}  # twice for each


# 5. A resumed flow that had already ended runs nothing more.

ABORTS = flow_tag(
    "fix",
    {
        "steps": [
            {"id": "first", "tool": "ops__add", "args": {"a": 2, "b": 3}},
            {"id": "record", "tool": "ops__write", "args": {"what": "{{ steps.first.text }}"}},
            {"id": "confirm", "tool": "ops__echo", "args": {"r": "{{ steps.record.status }}"}},
        ]
    },
)


async def test_a_resumed_flow_that_had_ended_runs_nothing_more(bench: Bench) -> None:
    """The engine ran the flow to its end (its FLOW state says so), then stopped before
    the session's own end was written; another engine resumes the session."""
    alice = caller(ABORTS)
    first = bench.engine(None)
    session = await first.start(alice, "", flow="fix", inputs={})
    with anyio.fail_after(30):
        end = await first.turns.flows.run(session, flow_of(alice, "fix"), "fix", {})
    assert (end.status, end.text) == (
        "failed",
        "step 'record' (ops__write) failed: could not write '5'",
    )
    ran = {"add": 1, "write": 1}
    assert (await tally(bench, alice))["calls"] == ran
    await first.claims.let_go(session)  # the engine is gone

    second = bench.engine(None)
    resumed = await second.load(session.id, alice)
    assert resumed.state is SessionState.SUBMITTED
    with anyio.fail_after(30):
        result = await second.resume(resumed)
    assert (result.state, result.text) == (SessionState.FAILED, end.text)
    assert (await tally(bench, alice))["calls"] == ran, "confirm never ran"
    state = await bench.store.get_flow_state(session.id, "fix")
    assert steps_status(state) == {"first": "completed", "record": "failed"}


# 6. Parallel steps' writes of the FLOW state never lose a step.


class Lagging(MemoryStore):
    """A memory store whose FLOW writes take a while to land, every other one longer (as
    over a network): a write begun earlier may land after one begun later. `seen` is what
    get_flow_state shows after each write lands."""

    def __init__(self) -> None:
        super().__init__(TTLs(), DEFAULT_STREAM_MAX_LEN)
        self.writes = 0
        self.seen: list[dict[str, str]] = []

    async def update_flow_state(
        self, session_id: str, flow_id: str, changes: Mapping[str, Any], ttl: float | None = None
    ) -> None:
        copied = json.loads(json.dumps(changes))  # the changes as they were when written
        self.writes += 1
        await anyio.sleep(0.05 if self.writes % 2 else 0.0)
        await super().update_flow_state(session_id, flow_id, copied, ttl)
        self.seen.append(steps_status(await self.get_flow_state(session_id, flow_id)))


WIDE = flow_tag(
    "wide",
    {"steps": [{"id": f"p{i}", "tool": "ops__add", "args": {"a": i, "b": 1}} for i in range(4)]},
)


async def test_parallel_steps_flow_state_lists_every_step_completed(bench: Bench) -> None:
    alice = caller(WIDE)
    every = {f"p{i}": "completed" for i in range(4)}
    for _ in range(3):
        async with Lagging() as store:
            lagging = Bench(bench.service, bench.pool, store)
            result = await run_flow(lagging, alice, "wide")
            assert result.state is SessionState.COMPLETED, result.text
            assert steps_status(await store.get_flow_state(result.session_id, "wide")) == every
            # Once shown completed, a step stays so in every later write.
            for index, seen in enumerate(store.seen):
                for step, status in seen.items():
                    if status == "completed":
                        later = [shown.get(step) for shown in store.seen[index:]]
                        assert set(later) == {"completed"}, (step, store.seen)


# A defect found while writing these: a cancelled flow leaves its runner's streams open.

ALONE = flow_tag(
    "alone",
    {"steps": [{"id": "m", "tool": "ops__meet", "args": {"room": "nobody", "wait": 3}}]},
)


async def test_a_cancelled_flow_leaves_no_stream_open(bench: Bench) -> None:
    alice = caller(ALONE)
    engine = bench.engine(None)
    session = await engine.start(alice, "", flow="alone", inputs={})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with anyio.move_on_after(0.5) as scope:
            await engine.run(session)
        gc.collect()
    assert scope.cancelled_caught, "the step was still under way when cancelled"
    assert session.state is SessionState.CANCELED
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert unclosed == []


# Found by the last review: a run stopped by a step, resumed before its end was written;
# and a FLOW key lost between two of a run's writes.


async def test_a_run_a_step_stopped_before_its_end_was_written_stays_stopped(
    bench: Bench,
) -> None:
    alice = caller(ABORTS)
    first = bench.engine(None)
    session = await first.start(alice, "", flow="fix", inputs={})
    with anyio.fail_after(30):
        await first.turns.flows.run(session, flow_of(alice, "fix"), "fix", {})
    state = await bench.store.get_flow_state(session.id, "fix")
    assert state is not None
    # As if the engine stopped after `record` failed and before the run's end was written.
    await bench.store.set_flow_state(
        session.id, "fix", {k: v for k, v in state.items() if k != "end"}
    )
    await first.claims.let_go(session)
    ran = (await tally(bench, alice))["calls"]
    second = bench.engine(None)
    with anyio.fail_after(30):
        result = await second.resume(await second.load(session.id, alice))
    assert (result.state, result.text) == (
        SessionState.FAILED,
        "step 'record' (ops__write) failed: could not write '5'",
    )
    assert (await tally(bench, alice))["calls"] == ran, "nothing after the stop ran"


TWO = flow_tag(
    "two",
    {
        "steps": [
            {"id": "first", "tool": "ops__add", "args": {"a": 2, "b": 3}},
            {"id": "second", "tool": "ops__echo", "args": {"r": "{{ steps.first.text }}"}},
        ]
    },
)


class Clocked(MemoryStore):
    """A memory store whose clock jumps past the FLOW key's TTL once `first` completed."""

    def __init__(self) -> None:
        self.now = 1000.0
        super().__init__(TTLs(flow=10), DEFAULT_STREAM_MAX_LEN, clock=lambda: self.now)
        self.jumped = False

    async def update_flow_state(
        self, session_id: str, flow_id: str, changes: Mapping[str, Any], ttl: float | None = None
    ) -> None:
        await super().update_flow_state(session_id, flow_id, changes, ttl)
        state = await self.get_flow_state(session_id, flow_id)
        first = ((state or {}).get("steps") or {}).get("first", {})
        if not self.jumped and first.get("status") == "completed":
            self.jumped = True
            self.now += 11


async def test_a_flow_key_lost_between_writes_is_not_taken_for_another_run(bench: Bench) -> None:
    alice = caller(TWO)
    async with Clocked() as store:
        clocked = Bench(bench.service, bench.pool, store)
        first = clocked.engine(None)
        session = await first.start(alice, "", flow="two", inputs={})
        with anyio.fail_after(30):
            end = await first.turns.flows.run(session, flow_of(alice, "two"), "two", {})
        assert end.status == "completed"
        state = await store.get_flow_state(session.id, "two")
        assert state is not None
        assert state["digest"] == flow_of(alice, "two").digest  # written with every change
        ran = (await tally(clocked, alice))["calls"]
        await first.claims.let_go(session)
        second = clocked.engine(None)
        with anyio.fail_after(30):
            result = await second.resume(await second.load(session.id, alice))
        assert result.state is SessionState.COMPLETED
        assert (await tally(clocked, alice))["calls"] == ran, "the resumed run ran nothing again"
