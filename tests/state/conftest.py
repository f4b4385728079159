"""Fixtures of the state store tests: a private redis-server, and stores of both backends."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Protocol

import anyio
import pytest
import redis

from gateway.state import DEFAULT_STREAM_MAX_LEN, StateStore, TTLs, open_store

# The contract's defaults, spelled out so that a change of `TTLs()` cannot silently change
# what these tests expect.
DEFAULT_TTLS = TTLs(
    session=7200, tag_cache=1800, events=3600, tool_execution=300, tool_results=600, flow=7200
)

BACKENDS = ("memory", "redis", "redis-cluster")

REDIS_START_TIMEOUT = 10.0
REDIS_STOP_TIMEOUT = 5.0
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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=REDIS_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=REDIS_STOP_TIMEOUT)


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A redis-server of our own on a free loopback port, never the shared one on 6379:
    the tests flush it."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not on PATH: the state store tests run against a real Redis "
            "(install it, e.g. `apt-get install redis-server`)"
        )
    directory: Path = tmp_path_factory.mktemp("redis")
    port = _free_port()
    command = [
        binary,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
        "--daemonize", "no",
    ]  # fmt: skip
    log_path = directory / "redis-server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + REDIS_START_TIMEOUT
            while not _answers_ping(port):
                if process.poll() is not None:
                    pytest.fail(
                        f"redis-server exited with {process.returncode} before answering on "
                        f"port {port}:\n{log_path.read_text(errors='replace')}"
                    )
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"redis-server did not answer PING on port {port} within "
                        f"{REDIS_START_TIMEOUT} s:\n{log_path.read_text(errors='replace')}"
                    )
                time.sleep(0.05)
            yield port
        finally:
            _stop(process)


@pytest.fixture
def redis_url(redis_port: int) -> str:
    """The private server's URL, its database emptied: each test starts from nothing."""
    with redis.Redis(host="127.0.0.1", port=redis_port, db=0) as client:
        client.flushdb()
    return f"redis://127.0.0.1:{redis_port}/0"


CLUSTER_NODES = 3


@pytest.fixture(scope="session")
def redis_cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """A Redis Cluster of our own: three primaries on free loopback ports, slots spread by
    `redis-cli --cluster create`. Only the cluster half of the suite starts it."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        pytest.fail("redis-server and redis-cli must be on PATH for the cluster tests")
    ports = [_free_port() for _ in range(CLUSTER_NODES)]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            directory = tmp_path_factory.mktemp(f"cluster-{port}")
            command = [
                binary,
                "--bind", "127.0.0.1",
                "--port", str(port),
                "--cluster-enabled", "yes",
                # Explicit: the default bus port, the port + 10000, may be taken or > 65535.
                "--cluster-port", str(_free_port()),
                "--cluster-config-file", str(directory / "nodes.conf"),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(directory),
            ]  # fmt: skip
            log = (directory / "redis.log").open("wb")
            processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
            log.close()
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while not all(_answers_ping(port) for port in ports):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                pytest.fail(f"cluster nodes on ports {ports} did not start")
            time.sleep(0.05)
        nodes = [f"127.0.0.1:{port}" for port in ports]
        create = [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"]
        subprocess.run(create, check=True, capture_output=True, timeout=30)
        with redis.Redis(host="127.0.0.1", port=ports[0]) as client:
            for _ in range(int(REDIS_START_TIMEOUT / 0.05)):
                if b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO"):
                    break
                time.sleep(0.05)
            else:
                pytest.fail(f"cluster on ports {ports} did not become ready")
        yield ports
    finally:
        for process in processes:
            _stop(process)


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
