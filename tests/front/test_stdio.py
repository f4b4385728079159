"""`gateway stdio`: a desktop client launches the gateway and sees its caller's tools."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from anyio.streams.text import TextReceiveStream
from mcp import Client, MCPError, StdioServerParameters

from tests.conftest import ROOT
from tests.front.harness import ACME, GLOBEX, KEYS, gateway_yaml, key_entries
from tests.helpers import gone, until

pytestmark = pytest.mark.anyio

GATEWAY = (sys.executable, "-m", "gateway.cli")


def configure(directory: Path, *, dev: bool = False) -> Path:
    orgs = directory / "orgs"
    orgs.mkdir()
    for org, text in {"acme": ACME, "globex": GLOBEX}.items():
        (orgs / f"{org}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    path = directory / "gateway.yaml"
    auth = f"  dev: {str(dev).lower()}\n  api_keys:\n{key_entries()}"
    path.write_text(gateway_yaml(auth), encoding="utf-8")
    return path


def launch(config: Path, *caller: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "gateway.cli", "stdio", "--config", str(config), *caller],
        cwd=str(ROOT),
        env={"PYTHONPATH": str(ROOT)},
    )


async def test_an_api_key_caller_lists_and_calls_and_leaves_no_process_behind(
    tmp_path: Path,
) -> None:
    config = configure(tmp_path)
    async with Client(launch(config, "--api-key", KEYS["bob"])) as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["echo__pid", "tiny__echo"]
        result = await client.call_tool("echo__pid", {})
        block = result.content[0]
        assert isinstance(block, types.TextContent)
        upstream_pid = int(block.text)
        with pytest.raises(MCPError, match="Unknown tool: echo__echo"):
            await client.call_tool("echo__echo", {})
    await until(lambda: gone(upstream_pid), 10)


async def test_a_local_user_is_named_on_the_command_line_in_a_dev_config(
    tmp_path: Path,
) -> None:
    config = configure(tmp_path, dev=True)
    async with Client(launch(config, "--user", "carol", "--org", "globex")) as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["tiny__echo"]
        result = await client.call_tool("tiny__echo", {"a": 1})
    assert not result.is_error


def test_a_wrong_key_is_refused_before_serving(tmp_path: Path) -> None:
    config = configure(tmp_path)
    done = subprocess.run(
        [*GATEWAY, "stdio", "--config", str(config), "--api-key", "not-a-key-0123456789"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 2
    assert "gateway stdio: the credential is not valid" in done.stderr
    assert done.stdout == ""


async def test_arguments_json_cannot_carry_are_invalid_params_on_stdio(tmp_path: Path) -> None:
    """The SDK's stdio parser takes `NaN` in arguments (and refuses a lone surrogate
    itself): the gateway refuses it before the call goes anywhere, as invalid params, and
    the upstream, shared by every call, is not touched."""
    config = configure(tmp_path)
    command = [*GATEWAY, "stdio", "--config", str(config), "--api-key", KEYS["alice"]]
    process = await anyio.open_process(
        command, cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=None
    )
    assert process.stdin is not None
    assert process.stdout is not None
    lines = TextReceiveStream(process.stdout)
    buffered = ""

    async def send(text: str) -> None:
        assert process.stdin is not None
        await process.stdin.send((text + "\n").encode())

    async def answer(request_id: int) -> Any:
        nonlocal buffered
        with anyio.fail_after(20):
            while True:
                while "\n" in buffered:
                    line, buffered = buffered.split("\n", 1)
                    message = json.loads(line)
                    if message.get("id") == request_id:
                        return message
                buffered += await lines.receive()

    def call(request_id: int, arguments: str) -> str:
        return (
            f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call",'
            f'"params":{{"name":"echo__echo","arguments":{arguments}}}}}'
        )

    try:
        initialize = {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"},
        }
        await send(
            json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": initialize})
        )
        assert "result" in await answer(0)
        await send('{"jsonrpc":"2.0","method":"notifications/initialized"}')
        for request_id in range(1, 8):  # more than the upstream breaker's threshold
            await send(call(request_id, '{"n": 1, "x": NaN}'))
            refused = (await answer(request_id))["error"]
            assert refused["code"] == -32602
            assert refused["message"].startswith("echo__echo: the arguments cannot be sent")
            assert "arguments.x: nan is not a JSON number" in refused["message"]
        await send(call(8, '{"n": 2}'))
        assert (await answer(8))["result"]["structuredContent"] == {"n": 2}
    finally:
        process.kill()
        with anyio.fail_after(10, shield=True):
            await process.wait()
        await process.aclose()


def test_a_user_named_without_a_credential_is_refused_unless_the_config_is_dev(
    tmp_path: Path,
) -> None:
    # Anyone who can start the gateway would otherwise be any user of any org.
    config = configure(tmp_path)
    done = subprocess.run(
        [*GATEWAY, "stdio", "--config", str(config), "--user", "alice", "--org", "acme"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 2
    assert (
        "gateway stdio: --user and --org serve a caller without a credential, which only a "
        f"development config allows (auth.dev: true in {config})"
    ) in done.stderr
    assert done.stdout == ""
