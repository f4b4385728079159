"""Helpers shared by the upstream tests (and the front's): the project's echo server as a
stdio or HTTP upstream, a connection running, a tool result's text, gateway.yaml errors,
and where the third-party server-everything is installed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import mcp_types as types
import pytest

from gateway.errors import ConfigError
from gateway.settings import load_config
from gateway.upstreams.config import StdioUpstream
from gateway.upstreams.connection import UpstreamConnection
from tests.conftest import ROOT
from tests.redis_server import free_port

ECHO = ("-m", "tests.upstreams.servers.echo")
ECHO_TOOLS = [
    *("echo", "sleep", "crash", "pid", "mutate", "cancelled", "ask", "confirm", "reject"),
    *("lookup", "pay"),
]
EVERYTHING = ROOT / ".cache/upstreams/node_modules/@modelcontextprotocol/server-everything"
"""@modelcontextprotocol/server-everything, as scripts/ensure-upstreams installs it."""


def stdio(**fields: object) -> StdioUpstream:
    base: dict[str, object] = {
        "transport": "stdio",
        "command": sys.executable,
        "args": [*ECHO, "stdio"],
        "cwd": str(ROOT),
        "env": {"PYTHONPATH": str(ROOT)},
    }
    return StdioUpstream.model_validate({**base, **fields}, strict=False)


@asynccontextmanager
async def running(connection: UpstreamConnection) -> AsyncIterator[UpstreamConnection]:
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(connection.run)
        yield connection
        tasks.cancel_scope.cancel()


def text(result: types.CallToolResult | types.InputRequiredResult) -> str:
    assert isinstance(result, types.CallToolResult)
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


@contextmanager
def http_echo(transport: str = "http", failures: int = 0) -> Iterator[str]:
    path = "mcp" if transport == "http" else "sse"
    with http_upstream(lambda port: [*ECHO, transport, str(port), str(failures)], path) as url:
        yield url


@contextmanager
def http_upstream(arguments: Callable[[int], Sequence[str]], path: str = "mcp") -> Iterator[str]:
    """`python ARGUMENTS(port)`, an HTTP upstream on a free port: its URL while it runs
    (the process ended after, also when the test fails)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, *arguments(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while not listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP upstream {arguments(port)} did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/{path}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def listening(port: int) -> bool:
    """Something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def write_config(tmp_path: Path, text: str) -> Path:
    """`text` as tmp_path/gateway.yaml, beside an empty orgs directory."""
    (tmp_path / "orgs").mkdir(exist_ok=True)
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def config_errors(tmp_path: Path, text: str) -> list[str]:
    """What loading `text` as a gateway.yaml reports, each issue without the file's path."""
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(issue).removeprefix(f"{path}:") for issue in caught.value.issues]
