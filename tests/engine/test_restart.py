"""The gateway process is killed (SIGKILL, its whole process group, as a machine that dies)
twice in one agent session on a Redis store, and started again each time: the session
resumes from its last event. The read-only call cut off by the first kill is sent again,
under the same idempotency key; the write cut off by the second is not, the session asks
the user instead, and the upstream's ledger shows one attempt until the user approves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.state import open_store
from tests.conftest import ROOT
from tests.engine.helpers import envelope, reply
from tests.engine.test_resume import CLERK
from tests.helpers import clean_env, serving, until
from tests.state.conftest import DEFAULT_TTLS, started

pytestmark = pytest.mark.anyio

KEY = "test-key-carol-0001"
SCRIPT = [
    envelope(
        "tools",
        mode="sequential",
        calls=[
            {"tool": "ledger__read", "arguments": json.dumps({"what": "a"})},
            {"tool": "ledger__write", "arguments": json.dumps({"what": "b"})},
        ],
    ),
    reply("booked"),
]
ACME = CLERK.replace('["ledger__*"]', '["ledger__*", "gateway__run_session"]', 1)


def config(tmp_path: Path, redis_url: str) -> Path:
    (tmp_path / "orgs").mkdir()
    (tmp_path / "orgs" / "acme.yaml").write_text(ACME)
    (tmp_path / "script.yaml").write_text(json.dumps(SCRIPT))
    (tmp_path / "gates").mkdir()
    upstream = {
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-m", "tests.engine.servers.ledger", str(tmp_path / "ledger"), "gates"],
        "cwd": str(tmp_path),
        "env": {"PYTHONPATH": str(ROOT)},
        "call_timeout": 60,
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(
        json.dumps(
            {
                "data_dir": str(tmp_path / "data"),
                "auth": {"dev": True, "api_keys": [{"user": "carol", "org": "acme", "key": KEY}]},
                "tags": {"dir": "orgs", "watch": False},
                "state": {"url": redis_url},
                "engine": {"planner": "scripted", "script": "script.yaml", "lease": 1},
                "upstreams": {"ledger": upstream},
            }
        )
    )
    return path


async def run_session(port: int, arguments: dict[str, Any]) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/mcp"
    async with (
        httpx2.AsyncClient(headers={"X-API-Key": KEY}, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        result = await client.call_tool("gateway__run_session", arguments)
    assert isinstance(result, types.CallToolResult)
    assert result.structured_content is not None, result
    return dict(result.structured_content)


def kill(proc: subprocess.Popen[str]) -> str:
    """Kill the gateway and what it started, at once; what it had written to stderr."""
    os.killpg(proc.pid, signal.SIGKILL)
    return proc.communicate(timeout=10)[1]


async def test_a_session_survives_two_kills_and_asks_before_repeating_a_write(
    tmp_path: Path, redis_url: str
) -> None:
    path = config(tmp_path, redis_url)
    gateway = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)]
    env = clean_env()
    gates = tmp_path / "gates"
    ledger = tmp_path / "ledger"

    def lines() -> list[list[str]]:
        text = ledger.read_text() if ledger.exists() else ""
        return [line.split(" ") for line in text.splitlines()]

    def attempts(tool: str) -> Callable[[], bool]:
        return lambda: any(line[0] == tool for line in lines())

    (gates / "read").touch()
    (gates / "write").touch()
    with serving(gateway, env, group=True) as (proc, port):
        assert proc.poll() is None, proc.communicate()
        lost: list[Exception] = []
        async with anyio.create_task_group() as tasks:

            async def cut_off() -> None:
                try:
                    await run_session(port, {"message": "book it"})
                except Exception as exc:  # the connection, lost with the gateway
                    lost.append(exc)

            tasks.start_soon(cut_off)
            await until(attempts("read"), 30)
            kill(proc)
        assert lost, "the call was cut off"
    async with started(open_store(redis_url, ttls=DEFAULT_TTLS)) as store:
        (session_id,) = await store.session_ids()
        snapshot = await store.get_session_state(session_id)
        assert snapshot is not None
        assert snapshot["state"] == "working"

    (gates / "read").unlink()
    with serving(gateway, env, group=True) as (proc, port):
        assert proc.poll() is None, proc.communicate()
        await until(attempts("write"), 30)  # resumed: the read again, then the write
        kill(proc)
    assert [line[0] for line in lines()] == ["read", "read", "write"]
    assert lines()[0][2] == lines()[1][2] == f"{session_id}:1.0", "the same key, sent again"

    with serving(gateway, env, group=True) as (proc, port):
        assert proc.poll() is None, proc.communicate()
        with anyio.fail_after(60):
            asked = await run_session(port, {"session_id": session_id})
        assert asked["status"] == "input_required", asked
        assert "ledger__write ran" in asked["text"]
        assert "unknown" in asked["text"]
        assert [line[0] for line in lines()] == ["read", "read", "write"], "one write attempt"

        (gates / "write").unlink()
        with anyio.fail_after(60):
            done = await run_session(port, {"session_id": session_id, "approval": "approve"})
        assert (done["status"], done["text"]) == ("completed", "booked"), done
        assert [call["tool"] for call in done["calls"]] == ["ledger__read", "ledger__write"]
        assert [line[0] for line in lines()] == ["read", "read", "write", "write"]
        assert lines()[2][2] == lines()[3][2] == f"{session_id}:1.1"
        proc.send_signal(signal.SIGINT)
        with anyio.fail_after(20):
            await anyio.to_thread.run_sync(proc.communicate)
