"""A second real client: the MCP Inspector's CLI (the official TypeScript SDK client)
lists and calls tools through the gateway with an API key."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from tests.front.harness import KEYS, Gateway
from tests.front.mcp_clients import inspector

pytestmark = pytest.mark.anyio


async def run(gateway: Gateway, *args: str, header: str | None) -> tuple[int, str]:
    command = [*inspector(), gateway.url, "--transport", "http", *args]
    if header is not None:
        command += ["--header", header]
    with anyio.fail_after(60):
        done = await anyio.run_process(command, check=False, cwd=Path(gateway.config.path).parent)
    return done.returncode, done.stdout.decode() + done.stderr.decode()


async def test_the_inspector_lists_a_callers_tools(gateway: Gateway) -> None:
    code, out = await run(gateway, "--method", "tools/list", header=f"X-API-Key: {KEYS['bob']}")
    assert code == 0, out
    assert [tool["name"] for tool in json.loads(out)["tools"]] == ["echo__pid", "tiny__echo"]


async def test_the_inspector_calls_a_tool_and_gets_scope_errors(gateway: Gateway) -> None:
    bearer = f"Authorization: Bearer {KEYS['alice']}"
    code, out = await run(
        gateway, "--method", "tools/call", "--tool-name", "echo__echo",
        "--tool-arg", "n=3", header=bearer,
    )  # fmt: skip
    assert code == 0, out
    result = json.loads(out)
    assert result["structuredContent"] == {"n": 3}
    code, out = await run(
        gateway, "--method", "tools/call", "--tool-name", "echo__echo",
        "--tool-arg", "n=50", header=bearer,
    )  # fmt: skip
    assert code != 0
    assert "n 50 exceeds max 5 set by tag support" in out


async def test_the_inspector_without_a_key_learns_nothing(gateway: Gateway) -> None:
    code, out = await run(gateway, "--method", "tools/list", header=None)
    assert code != 0
    assert "echo__" not in out
