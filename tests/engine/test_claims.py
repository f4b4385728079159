"""One engine at a time runs a session, among replicas sharing a Redis store: two answering
one question act once, an answer loaded before another acted is refused, and an engine
whose claim was taken over stops at once, cancelling its call and writing nothing more."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from gateway.calls import Completed, ToolCall
from gateway.engine.loop import Engine
from gateway.engine.planners.base import Answer, Planner, Turn
from gateway.engine.session import Session
from gateway.engine.states import SessionState
from gateway.errors import SessionNotWaiting, SessionTaken
from gateway.state import open_store
from gateway.state.base import Stream
from tests.engine.helpers import ALICE, Bench, Recording, envelope, reply, tool
from tests.state.conftest import DEFAULT_TTLS, started
from tests.upstreams.helpers import text

pytestmark = pytest.mark.anyio

CLARIFY = envelope("clarify", question="Which one?")


async def test_two_replicas_answering_one_question_act_once(bench: Bench, redis_url: str) -> None:
    async with (
        started(open_store(redis_url, ttls=DEFAULT_TTLS)) as one,
        started(open_store(redis_url, ttls=DEFAULT_TTLS)) as two,
    ):
        script = [CLARIFY, tool("echo__echo", n=1), reply()]
        first = bench.engine(Recording(script), store=one)
        second = bench.engine(Recording(script), store=two)
        session = await first.start(ALICE, "echo something")
        with anyio.fail_after(30):
            asked = await first.run(session)
        assert asked.state is SessionState.INPUT_REQUIRED
        copies = [await first.load(session.id, ALICE), await second.load(session.id, ALICE)]
        results: list[Any] = []

        async def answer(engine: Any, copy: Any) -> None:
            try:
                results.append(await engine.answer(copy, "the first"))
            except SessionNotWaiting as exc:
                results.append(exc)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(answer, first, copies[0])
                tasks.start_soon(answer, second, copies[1])
        refused = [r for r in results if isinstance(r, SessionNotWaiting)]
        assert len(refused) == 1, results
        assert "already" in str(refused[0])
        done = next(r for r in results if not isinstance(r, SessionNotWaiting))
        assert done.state is SessionState.COMPLETED
        batch = await one.read(session.id, Stream.EVENTS, limit=1000)
        types_ = [event.data["type"] for event in batch.events]
        assert types_.count("answer") == 1
        assert types_.count("intent") == 1


async def test_an_answer_loaded_before_another_acted_is_refused(bench: Bench) -> None:
    engine = bench.engine(Recording([CLARIFY, reply("ok")]))
    session = await engine.start(ALICE, "help")
    with anyio.fail_after(30):
        await engine.run(session)
    stale = await engine.load(session.id, ALICE)
    fresh = await engine.load(session.id, ALICE)
    with anyio.fail_after(30):
        assert (await engine.answer(fresh, "this")).state is SessionState.COMPLETED
    with pytest.raises(SessionNotWaiting, match="already answered"):
        await engine.answer(stale, "that")
    stored = await bench.store.get_session_state(session.id)
    assert stored is not None
    assert stored["state"] == "completed"
    # The refused answer let go of its claim: the session's claim is free again.
    assert await bench.store.claim_session(session.id, "someone", 5)


async def test_an_engine_whose_claim_was_taken_stops_at_once(bench: Bench) -> None:
    """Its lease lapsed (a pause, a partition) and another replica took the session: the
    engine notices at its next renewal, cancels the call it had under way, raises
    SessionTaken, and writes neither an end nor a snapshot."""
    engine = bench.engine(Recording([tool("echo__sleep", seconds=20), reply()]), lease=1.0)
    session = await engine.start(ALICE, "wait")
    raised = await taken_mid_call(bench, engine, session)
    assert len(raised) == 1
    assert "elsewhere" in str(raised[0])
    events = await bench.events(session.id)
    assert [e["type"] for e in events][-1] == "intent", "nothing written after the theft"
    stored = await bench.store.get_session_state(session.id)
    assert stored is not None
    assert stored["state"] == "working"
    counted = await bench.service.call(ALICE, ToolCall("echo__cancelled", {}))
    assert isinstance(counted, Completed)
    assert text(counted.result) == "1"  # the upstream saw the call cancelled


async def test_a_session_ended_or_waiting_holds_no_claim(bench: Bench) -> None:
    engine = bench.engine(Recording([CLARIFY, reply()]))
    session = await engine.start(ALICE, "help")
    with anyio.fail_after(30):
        await engine.run(session)
    assert session.claim is None
    assert await bench.store.claim_session(session.id, "another-replica", 5)
    other = await engine.load(session.id, ALICE)
    with pytest.raises(SessionNotWaiting, match="already being answered"):
        await engine.answer(other, "this")


async def test_a_stale_holder_writes_nothing_once_another_holds_the_claim(bench: Bench) -> None:
    """Its renewal far off (a long lease), the engine learns of the takeover from the
    store itself: the result of its call is not written, and SessionTaken comes out as
    it is (not in an ExceptionGroup)."""
    script = [tool("echo__sleep", seconds=0.5), tool("echo__echo", n=1), reply()]
    engine = bench.engine(Recording(script), lease=30.0)
    session = await engine.start(ALICE, "wait")
    raised = await taken_mid_call(bench, engine, session)
    assert len(raised) == 1
    types_ = [e["type"] for e in await bench.events(session.id)]
    assert types_[-1] == "intent", "neither the result nor a next call was written"
    assert types_.count("intent") == 1


async def taken_mid_call(bench: Bench, engine: Engine, session: Session) -> list[SessionTaken]:
    """Run `session` and, once its call is under way, take its claim as another replica
    would after its lease lapsed; what the run raised."""
    raised: list[SessionTaken] = []

    async def run() -> None:
        try:
            await engine.run(session)
        except SessionTaken as exc:
            raised.append(exc)

    with anyio.fail_after(15):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run)
            for _ in range(200):  # until the call is under way
                if "intent" in [e["type"] for e in await bench.events(session.id)]:
                    break
                await anyio.sleep(0.02)
            else:
                pytest.fail("the call never started")
            owner = session.claim
            assert owner is not None
            await bench.store.release_session(session.id, owner)
            assert await bench.store.claim_session(session.id, "another-replica", 30)
    return raised


async def test_an_end_that_finds_the_session_anothers_leaves_it_to_them(bench: Bench) -> None:
    """The planner fails after another replica took the session: the engine writes no
    failure (its end is the new holder's to write), raises SessionTaken, and holds
    nothing for it any more, so a sweep here may take the session up later."""
    sessions: list[Session] = []

    class Failing(Planner):
        async def decide(self, turn: Turn) -> Answer:
            session = sessions[0]
            owner = session.claim
            assert owner is not None
            await bench.store.release_session(session.id, owner)
            assert await bench.store.claim_session(session.id, "another-replica", 30)
            raise RuntimeError("a bug, after the takeover")

    engine = bench.engine(Failing())
    sessions.append(await engine.start(ALICE, "fail"))
    with anyio.fail_after(15), pytest.raises(SessionTaken):
        await engine.run(sessions[0])
    assert sessions[0].id not in engine.claims.holding
    stored = await bench.store.get_session_state(sessions[0].id)
    assert stored is not None
    assert stored["state"] == "working"


async def test_a_live_run_stays_off_the_silent_runs_and_leaves_the_queue_at_its_end(
    bench: Bench,
) -> None:
    """A run longer than its lease renews its entry on the run queue with its claim: no
    other replica finds it silent meanwhile; once it ends, the queue holds nothing of it."""
    engine = bench.engine(Recording([tool("echo__sleep", seconds=1.5), reply()]), lease=0.4)
    session = await engine.start(ALICE, "wait")
    silent: list[list[tuple[str, str]]] = []

    async def watch() -> None:
        for _ in range(12):  # 1.2 s: three leases
            await anyio.sleep(0.1)
            silent.append(await bench.store.lapsed_runs("another", 0.4, 10))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(watch)
            result = await engine.run(session)
    assert result.state is SessionState.COMPLETED
    assert silent == [[]] * 12
    await anyio.sleep(0.5)
    assert await bench.store.lapsed_runs("another", 0.4, 10) == []
