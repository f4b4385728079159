"""Redis lost and back: bounded typed errors while it is down, recovery by itself after,
and no acknowledged write lost when Redis runs with `appendfsync always`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from gateway.state import START, StateStore, StateUnavailable, Stream, StreamBatch, open_store
from tests.redis_server import RedisServer, running
from tests.state.conftest import DEFAULT_TTLS

pytestmark = pytest.mark.anyio


@contextmanager
def durable_redis(directory: Path) -> Iterator[RedisServer]:
    """A redis-server that fsyncs every write to its append-only file before answering."""
    server = RedisServer(directory, "--appendonly", "yes", "--appendfsync", "always")
    with running(server):
        yield server


async def recovered(store: StateStore, deadline: float) -> float:
    """Seconds until an operation succeeds again, polling every 50 ms up to `deadline`."""
    started = time.monotonic()
    with anyio.fail_after(deadline):
        for _ in range(int(deadline / 0.05) + 1):
            try:
                await store.ping()
                return time.monotonic() - started
            except StateUnavailable:
                await anyio.sleep(0.05)
    raise AssertionError(f"no recovery within {deadline} s")


async def test_redis_killed_and_restarted(tmp_path: Path) -> None:
    with durable_redis(tmp_path) as server:
        async with open_store(server.url, DEFAULT_TTLS) as store:
            assert store.status().ready
            sender, received = anyio.create_memory_object_stream[StreamBatch](1000)

            async def follow() -> None:
                async for batch in store.follow("s1", Stream.EVENTS, START):
                    await sender.send(batch)

            with sender, received:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(follow)
                    # Every write below is acknowledged before the kill.
                    for n in range(20):
                        await store.set_session_state(f"s{n}", {"n": n})
                    ids = [await store.append("s1", Stream.EVENTS, {"n": n}) for n in range(50)]
                    await store.set_flow_state("s1", "flow_refund", {"step": 3})

                    server.kill()
                    # While it is down: a typed error, and quickly, every time.
                    for attempt in range(10):
                        started = time.monotonic()
                        with pytest.raises(StateUnavailable) as caught:
                            await store.get_session_state("s1")
                        assert time.monotonic() - started < 1.0, attempt
                        assert caught.value.retry_after > 0
                        assert str(caught.value).startswith(f"state store {server.url} unavailable")
                    assert not store.status().ready

                    server.start()
                    assert await recovered(store, deadline=5.0) < 5.0
                    assert store.status().ready

                    # Nothing acknowledged was lost (appendfsync always).
                    for n in range(20):
                        assert await store.get_session_state(f"s{n}") == {"n": n}
                    assert await store.get_flow_state("s1", "flow_refund") == {"step": 3}
                    batch = await store.read("s1", Stream.EVENTS, START, limit=100)
                    assert [event.id for event in batch.events] == ids

                    # The follower rode the outage out and goes on with new events.
                    new_id = await store.append("s1", Stream.EVENTS, {"n": 50})
                    seen: list[str] = []
                    with anyio.fail_after(5):
                        async for batch in received:
                            seen += [event.id for event in batch.events]
                            if batch.last_id == new_id:
                                break
                    assert seen == [*ids, new_id]
                    tasks.cancel_scope.cancel()


async def test_pub_sub_resubscribes_after_redis_returns(tmp_path: Path) -> None:
    with durable_redis(tmp_path) as server:
        async with open_store(server.url, DEFAULT_TTLS) as store, store.subscribe("s1") as events:
            server.kill()
            server.start()
            await recovered(store, deadline=5.0)
            # The subscription comes back with the connection; poll until it has.
            for _ in range(100):
                if await store.pub_event("s1", {"after": "restart"}):
                    break
                await anyio.sleep(0.05)
            with anyio.fail_after(2):
                payload = await anext(events)
            assert payload == {"after": "restart"}


@pytest.mark.anyio
async def test_more_operations_at_once_than_connections_wait_for_one(redis_url: str) -> None:
    """A burst past the pool's size is load, not Redis down: every operation completes
    (each waits for a connection), and the breaker stays shut."""
    from gateway.state.redis import RedisStore

    async with RedisStore(redis_url, DEFAULT_TTLS, 1000, max_connections=4) as store:
        done: list[str] = []

        async def one(n: int) -> None:
            done.append(await store.append(f"s{n % 7}", Stream.EVENTS, {"n": n}))

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tasks:
                for n in range(200):
                    tasks.start_soon(one, n)
        assert len(done) == 200
        assert store.status().ready
