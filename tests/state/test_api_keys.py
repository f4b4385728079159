"""What the session API keeps in the store, one suite for every backend: a user's index of
sessions, newest first and paged; single-use tokens; cancel requests."""

from __future__ import annotations

import anyio
import pytest

from gateway.state import StateStore

pytestmark = pytest.mark.anyio


async def test_a_users_sessions_are_listed_newest_first_a_page_at_a_time(
    store: StateStore,
) -> None:
    for n in range(5):
        await store.index_session("acme", "alice", f"s{n}", 1000.0 + n)
    await store.index_session("acme", "bob", "b1", 2000.0)
    await store.index_session("globex", "alice", "g1", 3000.0)
    first = await store.indexed_sessions("acme", "alice", None, 2)
    assert first == [("s4", 1004.0), ("s3", 1003.0)]
    rest = await store.indexed_sessions("acme", "alice", first[-1][1], 10)
    assert [session_id for session_id, _ in rest] == ["s2", "s1", "s0"]
    await store.unindex_sessions("acme", "alice", ["s2", "s0"])
    left = await store.indexed_sessions("acme", "alice", None, 10)
    assert [session_id for session_id, _ in left] == ["s4", "s3", "s1"]
    assert await store.indexed_sessions("acme", "nobody", None, 10) == []
    assert [s for s, _ in await store.indexed_sessions("globex", "alice", None, 10)] == ["g1"]


async def test_a_token_is_taken_once(store: StateStore) -> None:
    await store.put_token("t-1", {"user": "alice"}, 30)
    keys = await store.debug_keys("TOKEN:*")
    assert keys
    assert all("t-1" not in key for key in keys)  # kept by its digest only
    results = []

    async def take() -> None:
        results.append(await store.take_token("t-1"))

    async with anyio.create_task_group() as tasks:
        for _ in range(5):
            tasks.start_soon(take)
    assert results.count({"user": "alice"}) == 1
    assert results.count(None) == 4
    assert await store.take_token("never") is None


async def test_a_token_expires(store: StateStore) -> None:
    await store.put_token("t-2", {"user": "alice"}, 0.1)
    await anyio.sleep(0.3)
    assert await store.take_token("t-2") is None


async def test_a_cancel_request_is_kept_for_the_session(store: StateStore) -> None:
    assert await store.cancel_request("s1") is None
    await store.request_cancel("s1", "after_step")
    assert await store.cancel_request("s1") == "after_step"
    assert await store.cancel_request("s2") is None


async def test_a_silent_run_is_taken_over_once_and_a_renewed_one_is_not(
    store: StateStore,
) -> None:
    assert await store.lapsed_runs("b", 0.2, 10) == []  # no run ever enlisted
    quiet = await store.enlist_run("s1", "a")
    alive = await store.enlist_run("s2", "a")
    ended = await store.enlist_run("s3", "a")
    await store.end_run(ended)
    assert await store.lapsed_runs("b", 0.2, 10) == []  # none silent long enough yet
    for _ in range(6):  # renewed more often than it may be silent
        await anyio.sleep(0.05)
        await store.renew_run(alive, "a")
    taken = await store.lapsed_runs("b", 0.2, 10)
    assert taken == [(quiet, "s1")]
    assert await store.lapsed_runs("c", 0.2, 10) == []  # b holds it now, renewed by taking
    await store.end_run(quiet)
    await anyio.sleep(0.3)
    assert await store.lapsed_runs("c", 0.2, 10) == [(alive, "s2")]


async def test_renewing_a_dropped_run_says_so(store: StateStore) -> None:
    entry = await store.enlist_run("s1", "a")
    assert await store.renew_run(entry, "a")
    await store.end_run(entry)
    assert not await store.renew_run(entry, "a")


@pytest.mark.parametrize(
    "after", ["18446744073709551615-18446744073709551615", "18446744073709551615", "5"]
)
async def test_a_read_after_any_valid_id_answers(store: StateStore, after: str) -> None:
    """The greatest id has nothing after it, and an id without its sequence reads on."""
    from gateway.state.base import Stream

    await store.append("s1", Stream.EVENTS, {"n": 1})
    batch = await store.read("s1", Stream.EVENTS, after, 10)
    if after == "5":
        assert len(batch.events) == 1
    else:
        assert batch.events == ()


@pytest.mark.parametrize("bad", ["1_0-0", "99999999999999999999999-0", "1-0\n", " 1", "-", "+"])
async def test_an_id_redis_would_refuse_is_refused_first(store: StateStore, bad: str) -> None:
    from gateway.errors import InvalidStreamId
    from gateway.state.base import Stream

    with pytest.raises(InvalidStreamId):
        await store.read("s1", Stream.EVENTS, bad, 10)


async def test_silent_runs_are_found_behind_many_live_ones(store: StateStore) -> None:
    """XAUTOCLAIM reads a window of the pending runs at a time: a silent run behind more
    live runs than one window holds is still found."""
    live = [await store.enlist_run(f"live{n}", "a") for n in range(120)]
    silent = await store.enlist_run("silent", "a")
    await anyio.sleep(0.3)
    for entry in live:
        assert await store.renew_run(entry, "a")
    taken = await store.lapsed_runs("b", 0.2, 10)  # a window of 100, behind 120 live
    assert taken == [(silent, "silent")]
