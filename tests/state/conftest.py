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

BACKENDS = ("memory", "redis")

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


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def state_url(backend: str, request: pytest.FixtureRequest) -> str:
    if backend == "memory":
        return "memory://"
    # Only the redis half of the suite needs (and starts) the server.
    url: str = request.getfixturevalue("redis_url")
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
