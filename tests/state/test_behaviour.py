"""The state store's behaviour, one suite for both backends: key names, TTLs, round trips,
the value encoding, streams and their gaps, follow, pub/sub, and replicas sharing Redis."""

from __future__ import annotations

import itertools
import json
import re
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import redis.asyncio
from redis.crc import key_slot

from gateway.state import (
    START,
    InvalidStreamId,
    StateDecodeError,
    StateError,
    StateStore,
    Stream,
    StreamBatch,
    StreamEvent,
    TTLs,
    open_store,
)
from gateway.state.base import parse_id
from gateway.state.codec import ENCODING_VERSION, decode, encode
from tests.state.conftest import DEFAULT_TTLS, MakeStore, started

S1_KEYS = {
    "SESSION:{s1}",
    "SESSION:{s1}:flows",
    "FLOW:{s1}:{flow_refund}",
    "STREAM:{s1}:events",
    "STREAM:{s1}:tool_execution",
    "STREAM:{s1}:tool_results",
}

# Distinct per kind, so that a key given another kind's TTL is caught. Session and flow are
# equal because the contract does not say which of the two the set of flow ids follows.
SHORT_TTLS = TTLs(session=4, events=5, tool_execution=6, tool_results=7, flow=4)


def expected_ttls(session_id: str, ttls: TTLs) -> dict[str, float]:
    return {
        f"SESSION:{{{session_id}}}": ttls.session,
        f"SESSION:{{{session_id}}}:flows": ttls.session,
        f"FLOW:{{{session_id}}}:{{flow_refund}}": ttls.flow,
        f"STREAM:{{{session_id}}}:events": ttls.events,
        f"STREAM:{{{session_id}}}:tool_execution": ttls.tool_execution,
        f"STREAM:{{{session_id}}}:tool_results": ttls.tool_results,
    }


async def write_session(store: StateStore, session_id: str) -> None:
    """Writes every kind of key a session has: state, a flow, and each of the streams."""
    await store.set_session_state(session_id, {"session": session_id})
    await store.set_flow_state(session_id, "flow_refund", {"step": 1})
    for stream in Stream:
        await store.append(session_id, stream, {"stream": stream.value})


@asynccontextmanager
async def raw_redis(url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


@asynccontextmanager
async def following(
    store: StateStore, session_id: str, stream: Stream, after_id: str = START
) -> AsyncIterator[AsyncIterator[StreamBatch]]:
    batches = store.follow(session_id, stream, after_id)
    try:
        yield batches
    finally:
        # Finalized by the garbage collector instead, the generator would run its cleanup
        # in another task, outside the cancel scopes it entered.
        aclose: Callable[[], Awaitable[None]] | None = getattr(batches, "aclose", None)
        if aclose is not None:
            with anyio.fail_after(5, shield=True):
                await aclose()


# --- key names and TTLs --------------------------------------------------------------------


@pytest.mark.anyio
async def test_key_names_are_exact(store: StateStore) -> None:
    await write_session(store, "s1")
    await store.set_session_state("s2", {"other": True})
    assert set(await store.debug_keys()) == S1_KEYS | {"SESSION:{s2}"}
    assert set(await store.debug_keys("STREAM:*")) == {
        "STREAM:{s1}:events",
        "STREAM:{s1}:tool_execution",
        "STREAM:{s1}:tool_results",
    }


@pytest.mark.anyio
async def test_a_flow_state_is_written_a_field_or_an_entry_at_a_time(store: StateStore) -> None:
    await store.set_flow_state("s1", "f", {"flow": "f", "status": "running"})
    await store.update_flow_state("s1", "f", {"status": "working", "steps.a": {"n": 1}})
    await store.update_flow_state("s1", "f", {"steps.b": {"n": 2}, "steps.a": {"n": 3}})
    assert await store.get_flow_state("s1", "f") == {
        "flow": "f",
        "status": "working",
        "steps": {"a": {"n": 3}, "b": {"n": 2}},
    }
    await store.set_flow_state("s1", "f", {"flow": "f"})  # a whole state replaces
    assert await store.get_flow_state("s1", "f") == {"flow": "f"}
    await store.update_flow_state("s1", "g", {"steps.x.y": 1})  # an entry's name may hold dots
    assert await store.get_flow_state("s1", "g") == {"steps": {"x.y": 1}}
    assert set(await store.debug_keys("FLOW:*")) == {"FLOW:{s1}:{f}", "FLOW:{s1}:{g}"}


@pytest.mark.anyio
async def test_ids_are_escaped_so_that_no_key_is_forged(store: StateStore) -> None:
    # Unescaped, both would be FLOW:{a}:{b}:{c}.
    await store.set_flow_state("a}:{b", "c", {"who": "a}:{b"})
    await store.set_flow_state("a", "b}:{c", {"who": "a"})
    # Unescaped, the second would be the first's escaped form.
    await store.set_session_state("x}b", {"who": "x}b"})
    await store.set_session_state("x%7Db", {"who": "x%7Db"})
    await store.set_flow_state("x}b", "f:1", {"flow": "f:1"})

    assert set(await store.debug_keys()) == {
        "FLOW:{a%7D%3A%7Bb}:{c}",
        "SESSION:{a%7D%3A%7Bb}:flows",
        "FLOW:{a}:{b%7D%3A%7Bc}",
        "SESSION:{a}:flows",
        "SESSION:{x%7Db}",
        "SESSION:{x%257Db}",
        "SESSION:{x%7Db}:flows",
        "FLOW:{x%7Db}:{f%3A1}",
    }
    assert await store.get_flow_state("a}:{b", "c") == {"who": "a}:{b"}
    assert await store.get_flow_state("a", "b}:{c") == {"who": "a"}
    assert await store.get_session_state("x}b") == {"who": "x}b"}
    assert await store.get_session_state("x%7Db") == {"who": "x%7Db"}
    assert await store.get_flow_state("x}b", "f:1") == {"flow": "f:1"}
    assert await store.get_flow_state("x}b", "f%3A1") is None


@pytest.mark.anyio
async def test_keys_of_one_session_share_a_cluster_slot(store: StateStore) -> None:
    sessions = ("s1", "we{ir}d:%{")
    for session_id in sessions:
        await write_session(store, session_id)
    keys = await store.debug_keys()
    assert len(keys) == 2 * len(S1_KEYS)
    slots = {session_id: set[int]() for session_id in sessions}
    for key in keys:
        session_id = "s1" if "{s1}" in key else "we{ir}d:%{"
        slots[session_id].add(key_slot(key.encode()))
    assert [len(found) for found in slots.values()] == [1, 1], slots


@pytest.mark.anyio
async def test_a_cluster_places_every_key_of_a_session_on_one_node(
    redis_cluster_url: str, redis_cluster_ports: list[int]
) -> None:
    """Asked of the cluster itself, not of the client's slot function: each node says
    which of the session's keys it holds, and one node holds them all."""
    async with started(open_store(redis_cluster_url, DEFAULT_TTLS)) as store:
        await write_session(store, "s1")
    holders: dict[int, set[str]] = {}
    for port in redis_cluster_ports:
        async with raw_redis(f"redis://127.0.0.1:{port}/0") as node:
            found = {str(key, "utf-8") for key in await node.keys("*") if isinstance(key, bytes)}
        if found:
            holders[port] = found
    assert len(holders) == 1, holders
    assert next(iter(holders.values())) == S1_KEYS


@pytest.mark.anyio
async def test_every_key_gets_its_configured_ttl(
    store: StateStore, backend: str, state_url: str
) -> None:
    await write_session(store, "s1")
    expected = expected_ttls("s1", DEFAULT_TTLS)

    keys = await store.debug_keys()
    assert set(keys) == set(expected)
    for key, remaining in keys.items():
        assert remaining is not None, key
        assert abs(remaining - expected[key]) <= 1, (key, remaining)

    if backend == "redis":
        async with raw_redis(state_url) as raw:
            for key, ttl in expected.items():
                pttl = await raw.pttl(key)
                assert abs(pttl / 1000 - ttl) <= 1, (key, pttl)


@pytest.mark.anyio
async def test_touch_session_renews_every_key_of_the_session(make_store: MakeStore) -> None:
    async with make_store(SHORT_TTLS) as store:
        await write_session(store, "s1")
        await store.set_session_state("s2", {"other": True})
        await anyio.sleep(1.6)
        expected = expected_ttls("s1", SHORT_TTLS)

        # Without the clock moving first, a renewal could not be told from no renewal.
        before = await store.debug_keys()
        assert set(before) == set(expected) | {"SESSION:{s2}"}
        for key, remaining in before.items():
            configured = expected.get(key, SHORT_TTLS.session)
            assert remaining is not None, key
            assert remaining <= configured - 1, (key, remaining)

        assert await store.touch_session("s1") is True

        after = await store.debug_keys()
        for key, configured in expected.items():
            remaining = after[key]
            assert remaining is not None, key
            assert configured - 0.5 <= remaining <= configured + 0.01, (key, remaining)
        s2_remaining = after["SESSION:{s2}"]
        assert s2_remaining is not None
        assert s2_remaining <= SHORT_TTLS.session - 1


@pytest.mark.anyio
async def test_touch_session_is_false_for_an_unknown_session(store: StateStore) -> None:
    await store.set_session_state("s1", {"n": 1})
    assert await store.touch_session("s2") is False
    assert await store.touch_session("s1") is True


@pytest.mark.anyio
async def test_values_expire_after_their_ttl(make_store: MakeStore) -> None:
    one_second = TTLs(session=1, events=1, tool_execution=1, tool_results=1, flow=1)
    async with make_store(one_second) as store:
        await write_session(store, "s1")
        assert set(await store.debug_keys()) == S1_KEYS
        assert await store.get_session_state("s1") == {"session": "s1"}

        await anyio.sleep(1)
        with anyio.fail_after(3):
            for _ in range(60):
                if not await store.debug_keys():
                    break
                await anyio.sleep(0.05)
        assert await store.debug_keys() == {}
        assert await store.get_session_state("s1") is None
        assert await store.get_flow_state("s1", "flow_refund") is None
        for stream in Stream:
            assert (await store.read("s1", stream)).events == ()
        assert await store.touch_session("s1") is False


@pytest.mark.anyio
async def test_a_started_store_answers_ping(store: StateStore) -> None:
    await store.ping()
    assert store.status().ready


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_session_and_flow_round_trip(store: StateStore) -> None:
    value: dict[str, Any] = {"text": "héllo ✓", "nested": {"list": [1, 2.5, None, True]}}
    assert await store.get_session_state("s1") is None
    assert await store.get_flow_state("s1", "flow_refund") is None

    await store.set_session_state("s1", value)
    await store.set_flow_state("s1", "flow_refund", value | {"flow": True})
    assert await store.get_session_state("s1") == value
    assert await store.get_flow_state("s1", "flow_refund") == value | {"flow": True}

    await store.set_session_state("s1", {"replaced": True})
    assert await store.get_session_state("s1") == {"replaced": True}
    assert await store.get_session_state("s2") is None
    assert await store.get_flow_state("s1", "flow_other") is None
    assert await store.get_flow_state("s2", "flow_refund") is None


@pytest.mark.anyio
async def test_an_explicit_ttl_overrides_the_default(store: StateStore) -> None:
    await store.set_session_state("s1", {"n": 1}, ttl=50)
    await store.set_flow_state("s1", "flow_refund", {"n": 2}, ttl=60)
    keys = await store.debug_keys()
    for key, ttl in {"SESSION:{s1}": 50, "FLOW:{s1}:{flow_refund}": 60}.items():
        remaining = keys[key]
        assert remaining is not None, key
        assert abs(remaining - ttl) <= 1, (key, remaining)


@pytest.mark.anyio
async def test_delete_session_removes_every_key_of_that_session_only(
    store: StateStore,
) -> None:
    await write_session(store, "s1")
    await write_session(store, "s2")

    await store.delete_session("s1")

    assert set(await store.debug_keys()) == set(expected_ttls("s2", DEFAULT_TTLS))
    assert await store.get_session_state("s1") is None
    assert await store.get_flow_state("s1", "flow_refund") is None
    for stream in Stream:
        assert (await store.read("s1", stream)).events == ()
    assert await store.touch_session("s1") is False
    assert await store.get_session_state("s2") == {"session": "s2"}
    assert await store.get_flow_state("s2", "flow_refund") == {"step": 1}


# --- the value encoding --------------------------------------------------------------------


def test_decode_reads_what_encode_wrote() -> None:
    value = {"text": "héllo", "n": [1, 2.5, None]}
    raw = encode(value)
    assert json.loads(raw) == {"v": ENCODING_VERSION, "data": value}
    assert decode(raw, "SESSION:{abc}") == value
    assert decode(raw.decode(), "SESSION:{abc}") == value


def test_decode_refuses_a_newer_encoding_naming_the_key_and_both_versions() -> None:
    newer = ENCODING_VERSION + 1
    with pytest.raises(StateDecodeError) as caught:
        decode(json.dumps({"v": newer, "data": {"x": 1}}), "SESSION:{abc}")
    message = str(caught.value)
    assert "SESSION:{abc}" in message
    versions = {int(n) for n in re.findall(r"\d+", message.replace("SESSION:{abc}", ""))}
    assert {newer, ENCODING_VERSION} <= versions, message


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"data": {}}',
        b'{"v": 1}',
        b'{"v": 1, "data": [1]}',
        b'{"v": true, "data": {}}',
        b'{"v": "1", "data": {}}',
        b'{"v": 0, "data": {}}',
    ],
)
def test_decode_refuses_damaged_values_naming_the_key(raw: bytes) -> None:
    with pytest.raises(StateDecodeError, match=re.escape("FLOW:{abc}:{f}")):
        decode(raw, "FLOW:{abc}:{f}")


@pytest.mark.anyio
async def test_redis_values_of_a_newer_encoding_are_refused(redis_url: str) -> None:
    async with started(open_store(redis_url, DEFAULT_TTLS)) as store, raw_redis(redis_url) as raw:
        await store.set_session_state("s1", {"n": 1})
        await store.set_flow_state("s1", "flow_refund", {"n": 2})
        readers: dict[str, Callable[[], Awaitable[object]]] = {
            "SESSION:{s1}": lambda: store.get_session_state("s1"),
            "FLOW:{s1}:{flow_refund}": lambda: store.get_flow_state("s1", "flow_refund"),
        }
        for key, read in readers.items():
            # As a newer replica would have written it: same data, next encoding version.
            flow = key.startswith("FLOW:")  # a hash: each field of the state on its own
            stored = await (raw.hget(key, "n") if flow else raw.get(key))
            assert stored is not None, key
            envelope = json.loads(stored)
            assert envelope["v"] == ENCODING_VERSION, key
            envelope["v"] = ENCODING_VERSION + 1
            if flow:
                await raw.hset(key, "n", json.dumps(envelope))
            else:
                await raw.set(key, json.dumps(envelope), keepttl=True)

            with pytest.raises(StateDecodeError) as caught:
                await read()
            assert key in str(caught.value)


@pytest.mark.anyio
async def test_a_flow_state_written_whole_before_hashes_is_read_and_carried_on(
    redis_url: str,
) -> None:
    async with started(open_store(redis_url, DEFAULT_TTLS)) as store, raw_redis(redis_url) as raw:
        key = "FLOW:{s1}:{f}"
        old = {"v": ENCODING_VERSION, "data": {"flow": "f", "steps": {"a": {"n": 1}}}}
        await raw.set(key, json.dumps(old), px=60_000)
        assert await store.get_flow_state("s1", "f") == {"flow": "f", "steps": {"a": {"n": 1}}}
        await store.update_flow_state("s1", "f", {"steps.b": {"n": 2}})
        assert await raw.type(key) == b"hash"
        assert await store.get_flow_state("s1", "f") == {
            "flow": "f",
            "steps": {"a": {"n": 1}, "b": {"n": 2}},
        }


NOT_JSON: list[Any] = [{1, 2}, float("nan"), float("inf"), b"bytes", object()]


@pytest.mark.anyio
@pytest.mark.parametrize("bad", NOT_JSON, ids=["set", "nan", "inf", "bytes", "object"])
async def test_values_that_are_not_json_are_refused_on_write(
    store: StateStore, bad: object
) -> None:
    value = {"ok": 1, "bad": bad}
    writes: list[Callable[[], Awaitable[object]]] = [
        lambda: store.set_session_state("s1", value),
        lambda: store.set_flow_state("s1", "flow_refund", value),
        lambda: store.append("s1", Stream.EVENTS, value),
        lambda: store.pub_event("s1", value),
    ]
    for write in writes:
        with pytest.raises(StateError):
            await write()
    assert await store.debug_keys() == {}


# --- streams -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_append_returns_strictly_increasing_ids(store: StateStore) -> None:
    ids = [await store.append("s1", Stream.EVENTS, {"n": n}) for n in range(50)]
    parsed = [parse_id(event_id) for event_id in ids]
    assert all(earlier < later for earlier, later in itertools.pairwise(parsed))
    assert parsed[0] > parse_id(START)


@pytest.mark.anyio
async def test_append_many_appends_in_order_after_what_was_there(store: StateStore) -> None:
    first = await store.append("s1", Stream.EVENTS, {"n": 0})
    ids = await store.append_many("s1", Stream.EVENTS, [{"n": n} for n in range(1, 30)])
    assert len(ids) == 29
    parsed = [parse_id(event_id) for event_id in [first, *ids]]
    assert all(earlier < later for earlier, later in itertools.pairwise(parsed))
    batch = await store.read("s1", Stream.EVENTS, limit=100)
    assert [event.data for event in batch.events] == [{"n": n} for n in range(30)]
    assert [event.id for event in batch.events] == [first, *ids]
    assert await store.append_many("s1", Stream.EVENTS, []) == []
    ttl = (await store.debug_keys("STREAM:{s1}:events"))["STREAM:{s1}:events"]
    assert ttl is not None
    assert abs(ttl - DEFAULT_TTLS.events) < 1


@pytest.mark.anyio
async def test_append_many_with_one_bad_event_writes_none(store: StateStore) -> None:
    with pytest.raises(StateError):
        await store.append_many("s1", Stream.EVENTS, [{"n": 1}, {"bad": float("nan")}])
    assert (await store.read("s1", Stream.EVENTS)).events == ()
    assert await store.debug_keys() == {}


@pytest.mark.anyio
async def test_read_is_oldest_first_exclusive_and_limited(store: StateStore) -> None:
    values: list[dict[str, Any]] = [{"n": n, "text": "é" * n} for n in range(5)]
    ids = [await store.append("s1", Stream.EVENTS, value) for value in values]

    everything = await store.read("s1", Stream.EVENTS, after_id=START)
    assert everything.events == tuple(map(StreamEvent, ids, values))
    assert everything.gap is None
    assert everything.last_id == ids[-1]
    assert [e.id for e in (await store.read("s1", Stream.EVENTS, limit=2)).events] == ids[:2]
    after_second = await store.read("s1", Stream.EVENTS, after_id=ids[1])
    assert [e.id for e in after_second.events] == ids[2:]
    limited = await store.read("s1", Stream.EVENTS, after_id=ids[1], limit=2)
    assert [e.id for e in limited.events] == ids[2:4]

    at_the_end = await store.read("s1", Stream.EVENTS, after_id=ids[-1])
    assert (at_the_end.events, at_the_end.gap, at_the_end.last_id) == ((), None, None)
    never_written = await store.read("s1", Stream.TOOL_RESULTS)
    assert (never_written.events, never_written.gap) == ((), None)


@pytest.mark.anyio
@pytest.mark.parametrize("bad_id", ["nope", "1-x", "-1", "", "1-2-3", "x-1"])
async def test_an_invalid_stream_id_is_refused(store: StateStore, bad_id: str) -> None:
    await store.append("s1", Stream.EVENTS, {"n": 1})
    with pytest.raises(InvalidStreamId):
        await store.read("s1", Stream.EVENTS, after_id=bad_id)
    with anyio.fail_after(5), pytest.raises(InvalidStreamId):
        async with following(store, "s1", Stream.EVENTS, bad_id) as batches:
            await anext(batches)


@pytest.mark.anyio
async def test_streams_are_independent_per_session_and_name(store: StateStore) -> None:
    await store.append("s1", Stream.EVENTS, {"a": 1})
    await store.append("s1", Stream.TOOL_EXECUTION, {"b": 2})
    await store.append("s2", Stream.EVENTS, {"c": 3})

    async def data(session_id: str, stream: Stream) -> list[dict[str, Any]]:
        return [event.data for event in (await store.read(session_id, stream)).events]

    assert await data("s1", Stream.EVENTS) == [{"a": 1}]
    assert await data("s1", Stream.TOOL_EXECUTION) == [{"b": 2}]
    assert await data("s1", Stream.TOOL_RESULTS) == []
    assert await data("s2", Stream.EVENTS) == [{"c": 3}]
    assert await data("s2", Stream.TOOL_EXECUTION) == []


@pytest.mark.anyio
async def test_a_read_past_trimmed_events_reports_a_gap(
    make_store: MakeStore, backend: str
) -> None:
    max_len = 10
    # Redis trims whole nodes of up to 100 entries (MAXLEN ~): well past one node's worth,
    # event 1 must be gone whichever way the backend trims.
    count = 250
    async with make_store(stream_max_len=max_len) as store:
        ids = [await store.append("s1", Stream.EVENTS, {"n": n}) for n in range(count)]

        batch = await store.read("s1", Stream.EVENTS, after_id=ids[0], limit=1000)
        kept = [event.id for event in batch.events]
        if backend == "memory":
            assert len(kept) == max_len
        else:
            assert max_len <= len(kept) <= max_len + 100, len(kept)
        assert kept == ids[count - len(kept) :]
        assert [event.data for event in batch.events] == [
            {"n": n} for n in range(count - len(kept), count)
        ]
        assert batch.gap is not None
        assert batch.gap.after_id == ids[0]
        lost_through = batch.gap.lost_through
        assert lost_through is not None
        assert parse_id(ids[1]) <= parse_id(lost_through) < parse_id(kept[0])

        # A reader already past every trimmed event has missed nothing.
        resumed = await store.read("s1", Stream.EVENTS, after_id=lost_through, limit=1000)
        assert resumed.gap is None
        assert [event.id for event in resumed.events] == kept
        after_first_kept = await store.read("s1", Stream.EVENTS, after_id=kept[0], limit=1000)
        assert after_first_kept.gap is None
        assert [event.id for event in after_first_kept.events] == kept[1:]

        with anyio.fail_after(5):
            async with following(store, "s1", Stream.EVENTS, ids[0]) as batches:
                first = await anext(batches)
        assert first.gap is not None


# --- follow --------------------------------------------------------------------------------

WAKE_TRIALS = 5


@pytest.mark.anyio
async def test_follow_wakes_within_50ms_of_an_append(store: StateStore) -> None:
    last_id = await store.append("s1", Stream.EVENTS, {"n": 0})
    send, receive = anyio.create_memory_object_stream[tuple[float, StreamBatch]](WAKE_TRIALS)
    latencies: list[float] = []

    async def follower() -> None:
        async with following(store, "s1", Stream.EVENTS, last_id) as batches:
            async for batch in batches:
                await send.send((time.perf_counter(), batch))

    with send, receive, anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(follower)
            for n in range(1, WAKE_TRIALS + 1):
                # Long enough for the follower to be back waiting, so that it must be woken.
                await anyio.sleep(0.1)
                appended_at = time.perf_counter()
                event_id = await store.append("s1", Stream.EVENTS, {"n": n})
                woke_at, batch = await receive.receive()
                assert batch.events == (StreamEvent(event_id, {"n": n}),)
                latencies.append(woke_at - appended_at)
            tasks.cancel_scope.cancel()
    # The issue's requirement; the median of several trials, so that one slow wake-up on a
    # loaded machine does not decide.
    assert statistics.median(latencies) < 0.05, latencies


@pytest.mark.anyio
async def test_follow_from_the_start_receives_every_event_in_order(store: StateStore) -> None:
    send, receive = anyio.create_memory_object_stream[StreamBatch](100)
    appended: list[str] = []
    batches: list[StreamBatch] = []

    async def follower() -> None:
        async with following(store, "s1", Stream.TOOL_RESULTS) as followed:
            async for batch in followed:
                await send.send(batch)

    with send, receive, anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(follower)
            await anyio.sleep(0.1)  # the follower now waits on a stream that does not exist
            for chunk in range(3):
                for n in range(10):
                    event = {"n": 10 * chunk + n}
                    appended.append(await store.append("s1", Stream.TOOL_RESULTS, event))
                # Each chunk is delivered before the next is written: at least three batches.
                while sum(len(batch.events) for batch in batches) < len(appended):
                    batches.append(await receive.receive())
            tasks.cancel_scope.cancel()

    events = [event for batch in batches for event in batch.events]
    assert [event.id for event in events] == appended
    assert [event.data for event in events] == [{"n": n} for n in range(30)]
    assert len(batches) >= 3
    assert all(batch.gap is None for batch in batches)


@pytest.mark.anyio
async def test_followers_started_together_each_receive_their_stream(store: StateStore) -> None:
    streams = (Stream.EVENTS, Stream.TOOL_EXECUTION, Stream.TOOL_RESULTS)
    send, receive = anyio.create_memory_object_stream[tuple[Stream, StreamBatch]](10)

    async def follower(stream: Stream) -> None:
        async with following(store, "s1", stream) as batches:
            async for batch in batches:
                await send.send((stream, batch))

    with send, receive, anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            # Started in the same instant, and while appends hold the store's connections,
            # so that the followers' first waits overlap and need new connections.
            for stream in streams:
                tasks.start_soon(follower, stream)
            for stream in streams:
                await store.append("s1", stream, {"stream": stream.value})
            received = {}
            for _ in streams:
                stream, batch = await receive.receive()
                received[stream] = [event.data for event in batch.events]
            tasks.cancel_scope.cancel()
    assert received == {stream: [{"stream": stream.value}] for stream in streams}


@pytest.mark.anyio
async def test_many_followers_started_at_once_all_receive_their_event(store: StateStore) -> None:
    """As when every client reconnects after a restart: no follower may time out waiting
    for the others' subscriptions."""
    count = 1_000  # fewer do not show the old one-channel-at-a-time subscribing failing
    received: set[int] = set()
    failures: list[BaseException] = []

    async def follower(n: int) -> None:
        try:
            async with following(store, f"s{n}", Stream.EVENTS) as batches:
                async for batch in batches:
                    if batch.events:
                        received.add(n)
                        return
        except StateError as exc:
            failures.append(exc)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tasks:
            for n in range(count):
                tasks.start_soon(follower, n)
            for n in range(count):
                await store.append(f"s{n}", Stream.EVENTS, {"n": n})
    assert failures == []
    assert received == set(range(count))


@pytest.mark.anyio
async def test_follow_ends_when_the_store_closes(make_store: MakeStore) -> None:
    received = anyio.Event()
    ended: list[str] = []

    async def follow_to_the_end(
        store: StateStore, name: str, stream: Stream, on_batch: anyio.Event
    ) -> None:
        async with following(store, "s1", stream) as batches:
            async for _ in batches:
                on_batch.set()
        ended.append(name)

    # If a follower outlived the store, the deadline would cancel it and fail the test.
    with anyio.fail_after(5):
        # The store closes first; then the task group waits for both followers.
        async with anyio.create_task_group() as tasks, make_store() as store:
            tasks.start_soon(follow_to_the_end, store, "active", Stream.EVENTS, received)
            tasks.start_soon(follow_to_the_end, store, "idle", Stream.TOOL_RESULTS, anyio.Event())
            await store.append("s1", Stream.EVENTS, {"n": 1})
            await received.wait()
            await anyio.sleep(0.1)  # both followers are waiting now
    assert sorted(ended) == ["active", "idle"]


# --- pub/sub -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_pub_event_reaches_the_session_subscribers_only(
    store: StateStore, backend: str
) -> None:
    # In a cluster Redis counts the receivers of the node that took the PUBLISH only, which
    # need not be the node this store subscribed on (documented on `pub_event`).
    counted = backend != "redis-cluster"
    assert await store.pub_event("nobody", {"x": 0}) == 0
    async with store.subscribe("s1") as s1_events, store.subscribe("s2") as s2_events:
        counts = [await store.pub_event("s1", {"x": 1}), await store.pub_event("s2", {"y": 2})]
        if counted:
            assert min(counts) >= 1
        with anyio.fail_after(5):
            assert await anext(s1_events) == {"x": 1}
            # Published first, s1's payload would come first had s2's subscriber got it.
            assert await anext(s2_events) == {"y": 2}
    assert await store.pub_event("nobody", {"x": 0}) == 0


# --- replicas ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_two_replicas_share_state_streams_and_notifications(redis_url: str) -> None:
    async with (
        started(open_store(redis_url, DEFAULT_TTLS)) as a,
        started(open_store(redis_url, DEFAULT_TTLS)) as b,
    ):
        await a.set_session_state("s1", {"by": "a"})
        assert await b.get_session_state("s1") == {"by": "a"}
        await b.set_flow_state("s1", "flow_refund", {"by": "b"})
        assert await a.get_flow_state("s1", "flow_refund") == {"by": "b"}

        first = await a.append("s1", Stream.EVENTS, {"n": 1})

        async def append_on_a_soon() -> None:
            await anyio.sleep(0.1)  # b's follower is waiting by now
            await a.append("s1", Stream.EVENTS, {"n": 2})

        with anyio.fail_after(5):
            async with (
                following(b, "s1", Stream.EVENTS, first) as batches,
                anyio.create_task_group() as tasks,
            ):
                tasks.start_soon(append_on_a_soon)
                batch = await anext(batches)
        assert [event.data for event in batch.events] == [{"n": 2}]
        assert [event.data for event in (await b.read("s1", Stream.EVENTS)).events] == [
            {"n": 1},
            {"n": 2},
        ]

        async with b.subscribe("s1") as events:
            assert await a.pub_event("s1", {"x": 1}) >= 1
            with anyio.fail_after(5):
                assert await anext(events) == {"x": 1}
