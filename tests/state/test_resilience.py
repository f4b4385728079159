"""Redis lost and back: bounded typed errors while it is down, recovery by itself after,
and no acknowledged write lost when Redis runs with `appendfsync always`."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from gateway.state import START, StateStore, StateUnavailable, Stream, StreamBatch, open_store
from tests.state.conftest import DEFAULT_TTLS, _answers_ping, _free_port, _stop

pytestmark = pytest.mark.anyio

START_TIMEOUT = 10.0


class DurableRedis:
    """A redis-server of the test's own that fsyncs every write to its append-only file,
    and can be killed (-9) and started again on the same port and data."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not on PATH")
        self.binary = binary
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--dir", str(self.directory),
            "--daemonize", "no",
        ]  # fmt: skip
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers_ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                text = (self.directory / "redis.log").read_text(errors="replace")
                pytest.fail(f"redis-server did not start on port {self.port}:\n{text}")
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)


@contextmanager
def durable_redis(directory: Path) -> Iterator[DurableRedis]:
    server = DurableRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


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
