"""Fixtures of the state store tests: a private redis-server, and stores of both backends."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import anyio
import pytest
import redis

from gateway.state import DEFAULT_STREAM_MAX_LEN, StateStore, TTLs, open_store
from tests.redis_server import RedisServer, free_port, running

# The contract's defaults, spelled out so that a change of `TTLs()` cannot silently change
# what these tests expect.
DEFAULT_TTLS = TTLs(session=7200, events=3600, tool_execution=300, tool_results=600, flow=7200)

BACKENDS = ("memory", "redis", "redis-cluster")

CLUSTER_READY_TIMEOUT = 10.0
READY_TIMEOUT = 5.0
READY_POLL = 0.01


class MakeStore(Protocol):
    """A store of the test's backend, started and ready, for `async with`."""

    def __call__(
        self, ttls: TTLs = DEFAULT_TTLS, stream_max_len: int = DEFAULT_STREAM_MAX_LEN
    ) -> AbstractAsyncContextManager[StateStore]: ...


@asynccontextmanager
async def started(store: StateStore) -> AsyncIterator[StateStore]:
    """Starts `store` and waits until it reports ready: a Redis store whose first attempt
    to connect fails goes on connecting in the background after `start` returns."""
    async with store:
        for _ in range(int(READY_TIMEOUT / READY_POLL)):
            if store.status().ready:
                break
            await anyio.sleep(READY_POLL)
        status = store.status()
        assert status.ready, f"{store.url} not ready within {READY_TIMEOUT} s: {status.reason}"
        yield store


CLUSTER_NODES = 3


@pytest.fixture(scope="session")
def redis_cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """A Redis Cluster of our own: three primaries on free loopback ports, slots spread by
    `redis-cli --cluster create`. Only the cluster half of the suite starts it."""
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.fail("redis-cli must be on PATH for the cluster tests")
    nodes = []
    for _ in range(CLUSTER_NODES):
        directory = tmp_path_factory.mktemp("cluster")
        options = (
            "--cluster-enabled", "yes",
            # Explicit: the default bus port, the port + 10000, may be taken or > 65535.
            "--cluster-port", str(free_port()),
            "--cluster-config-file", str(directory / "nodes.conf"),
        )  # fmt: skip
        nodes.append(RedisServer(directory, *options))
    with running(*nodes):
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        create = [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0"]
        subprocess.run([*create, "--cluster-yes"], check=True, capture_output=True, timeout=30)
        with redis.Redis(host="127.0.0.1", port=nodes[0].port) as client:
            for _ in range(int(CLUSTER_READY_TIMEOUT / 0.05)):
                if b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO"):
                    break
                time.sleep(0.05)
            else:
                pytest.fail(f"cluster {addresses} did not become ready")
        yield [node.port for node in nodes]


@pytest.fixture
def redis_cluster_url(redis_cluster_ports: list[int]) -> str:
    for port in redis_cluster_ports:
        with redis.Redis(host="127.0.0.1", port=port) as client:
            client.flushall()
    return f"redis+cluster://127.0.0.1:{redis_cluster_ports[0]}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def state_url(backend: str, request: pytest.FixtureRequest) -> str:
    if backend == "memory":
        return "memory://"
    # Only the redis half of the suite needs (and starts) the server, and the cluster half
    # the cluster.
    fixture = "redis_cluster_url" if backend == "redis-cluster" else "redis_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def make_store(state_url: str) -> MakeStore:
    def make(ttls: TTLs = DEFAULT_TTLS, stream_max_len: int = DEFAULT_STREAM_MAX_LEN) -> StateStore:
        return open_store(state_url, ttls=ttls, stream_max_len=stream_max_len)

    return make


@pytest.fixture
async def store(make_store: MakeStore) -> AsyncIterator[StateStore]:
    async with make_store() as started:
        yield started
