"""Session claims, one suite for every backend: one owner at a time, a lease that lapses,
state written only by the owner, and two replicas of one Redis contending."""

from __future__ import annotations

import anyio
import pytest

from gateway.state import StateStore, open_store
from gateway.state.base import Stream, session_claim_key, session_id_of, session_key
from tests.state.conftest import DEFAULT_TTLS, started


@pytest.mark.anyio
async def test_one_owner_holds_a_claim_until_it_releases_it(store: StateStore) -> None:
    assert await store.claim_session("s1", "a", 30)
    assert not await store.claim_session("s1", "b", 30)
    assert await store.claim_session("s1", "a", 30), "the holder renews its own claim"
    await store.release_session("s1", "b")  # not b's: nothing happens
    assert not await store.claim_session("s1", "b", 30)
    await store.release_session("s1", "a")
    assert await store.claim_session("s1", "b", 30)
    assert await store.claim_session("s2", "a", 30), "claims are per session"


@pytest.mark.anyio
async def test_a_claim_not_renewed_lapses(store: StateStore) -> None:
    assert await store.claim_session("s1", "a", 0.2)
    assert not await store.claim_session("s1", "b", 30)
    for _ in range(100):  # the lease is 0.2 s; 5 s at most
        await anyio.sleep(0.05)
        if await store.claim_session("s1", "b", 30):
            break
    else:
        pytest.fail("the claim never lapsed")
    assert not await store.claim_session("s1", "a", 30)


@pytest.mark.anyio
async def test_only_the_owner_writes_claimed_state(store: StateStore) -> None:
    assert not await store.set_claimed_session_state("s1", {"v": 1}, "a")
    assert await store.get_session_state("s1") is None, "unclaimed: nothing written"
    assert await store.claim_session("s1", "a", 30)
    assert await store.set_claimed_session_state("s1", {"v": 2}, "a")
    assert not await store.set_claimed_session_state("s1", {"v": 3}, "b")
    assert await store.get_session_state("s1") == {"v": 2}
    keys = await store.debug_keys()
    assert set(keys) == {"SESSION:{s1}", "SESSION:{s1}:claim"}
    assert keys["SESSION:{s1}"] == pytest.approx(DEFAULT_TTLS.session, abs=1)


@pytest.mark.anyio
async def test_a_claim_is_deleted_with_its_session(store: StateStore) -> None:
    assert await store.claim_session("s1", "a", 30)
    await store.delete_session("s1")
    assert await store.claim_session("s1", "b", 30)


@pytest.mark.anyio
async def test_session_ids_lists_sessions_with_state_only(store: StateStore) -> None:
    for session_id in ("s1", "we{ir}d:%{", "s3"):
        await store.set_session_state(session_id, {"id": session_id})
    await store.set_flow_state("s4", "f", {})  # a flow alone is no session's state
    assert await store.claim_session("s5", "a", 30)
    assert sorted(await store.session_ids()) == sorted(["s1", "we{ir}d:%{", "s3"])


@pytest.mark.parametrize("session_id", ["s1", "we{ir}d:%{", "%7B", "}", ""])
def test_session_id_of_inverts_session_key(session_id: str) -> None:
    assert session_id_of(session_key(session_id)) == session_id
    assert session_id_of(session_claim_key(session_id)) is None
    assert session_id_of(f"{session_key(session_id)}:flows") is None


@pytest.mark.anyio
async def test_two_replicas_contending_for_one_claim_let_one_win(redis_url: str) -> None:
    """Many claims at once from two stores on one Redis: exactly one owner, per round."""
    async with (
        started(open_store(redis_url, ttls=DEFAULT_TTLS)) as one,
        started(open_store(redis_url, ttls=DEFAULT_TTLS)) as two,
    ):

        async def claim(store: StateStore, owner: str, session_id: str, won: list[str]) -> None:
            if await store.claim_session(session_id, owner, 30):
                won.append(owner)

        for round_ in range(20):
            won: list[str] = []

            async with anyio.create_task_group() as tasks:
                for n in range(5):
                    tasks.start_soon(claim, one, f"one-{n}", f"r{round_}", won)
                    tasks.start_soon(claim, two, f"two-{n}", f"r{round_}", won)
            assert len(won) == 1, won


@pytest.mark.anyio
async def test_only_the_owner_appends_claimed_events(store: StateStore) -> None:
    assert await store.append_claimed("s1", Stream.EVENTS, {"n": 1}, "a") is None
    assert await store.claim_session("s1", "a", 30)
    written = await store.append_claimed("s1", Stream.EVENTS, {"n": 2}, "a")
    assert written is not None
    assert await store.append_claimed("s1", Stream.EVENTS, {"n": 3}, "b") is None
    batch = await store.read("s1", Stream.EVENTS)
    assert [(event.id, event.data) for event in batch.events] == [(written, {"n": 2})]
