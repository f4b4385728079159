"""A gateway killed (SIGKILL, its whole process group) between two steps of a flow, on a
Redis store, and started again: the flow goes on from its last completed step, and the
upstream saw every step exactly once. The flow is started as an MCP tool, through the
gateway's /mcp, by the SDK client."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.state import open_store
from gateway.state.base import Stream
from tests.conftest import ROOT
from tests.engine.test_restart import kill
from tests.helpers import clean_env, serving, until
from tests.state.conftest import DEFAULT_TTLS, started

pytestmark = pytest.mark.anyio

KEY = "test-key-carol-0001"
ACME = """
users:
  carol: {roles: [clerk]}
tags:
  - tag: clerk
    kind: role
    payload:
      config:
        assigned_roles: [clerk]
        allowed_tools: ["ledger__*"]
        trusted_output: ["ledger__*"]
  - tag: flow_book
    kind: flow
    payload:
      config: {assigned_roles: [clerk]}
      content:
        description: Open an order, check it, close it
        inputs:
          type: object
          properties: {order: {type: string}}
          required: [order]
        steps:
          - id: open
            tool: ledger__write
            args: {what: "open-{{ input.order }}"}
          - id: check
            tool: ledger__read
            after: [open]
            args: {what: "check-{{ input.order }}"}
          - id: close
            tool: ledger__write
            after: [check]
            args: {what: "close-{{ input.order }}"}
        output: "{{ steps.close.text }}"
"""


def config(tmp_path: Path, redis_url: str) -> Path:
    (tmp_path / "orgs").mkdir()
    (tmp_path / "orgs" / "acme.yaml").write_text(ACME)
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
                "engine": {"lease": 1},
                "upstreams": {"ledger": upstream},
            }
        )
    )
    return path


async def test_a_flow_killed_between_steps_goes_on_once_each(
    tmp_path: Path, redis_url: str
) -> None:
    path = config(tmp_path, redis_url)
    gateway = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)]
    env = clean_env()
    ledger = tmp_path / "ledger"
    # `check` waits before it reaches the upstream's ledger: the kill comes after `open`
    # completed and before `check` took effect.
    gate = tmp_path / "gates" / "read.check-A1.before"
    gate.touch()

    def lines() -> list[list[str]]:
        text = ledger.read_text() if ledger.exists() else ""
        return [line.split(" ") for line in text.splitlines()]

    async with started(open_store(redis_url, ttls=DEFAULT_TTLS)) as store:

        async def checking() -> bool:
            for session_id in await store.session_ids():
                state = await store.get_flow_state(session_id, "flow_book")
                steps = (state or {}).get("steps", {})
                if steps.get("check", {}).get("status") == "running":
                    return True
            return False

        with serving(gateway, env, group=True) as (proc, port):
            assert proc.poll() is None, proc.communicate()
            lost: list[Exception] = []
            async with anyio.create_task_group() as tasks:

                async def cut_off() -> None:
                    url = f"http://127.0.0.1:{port}/mcp"
                    try:
                        async with (
                            httpx2.AsyncClient(headers={"X-API-Key": KEY}, timeout=60) as http,
                            Client(streamable_http_client(url, http_client=http)) as client,
                        ):
                            await client.call_tool("gateway__flow__book", {"order": "A1"})
                    except Exception as exc:  # the connection, lost with the gateway
                        lost.append(exc)

                tasks.start_soon(cut_off)
                for _ in range(600):  # 30 s
                    if await checking():
                        break
                    await anyio.sleep(0.05)
                kill(proc)
            assert lost, "the call was cut off"
        assert [line[:2] for line in lines()] == [["write", "open-A1"]]
        (session_id,) = await store.session_ids()
        snapshot = await store.get_session_state(session_id)
        assert snapshot is not None
        assert snapshot["state"] == "working"

        gate.unlink()
        with serving(gateway, env, group=True) as (proc, port):
            assert proc.poll() is None, proc.communicate()
            # Its lease lapsed: the new gateway's sweep resumes the session.
            try:
                await until(lambda: len(lines()) >= 3, 60)
            except AssertionError:
                said = kill(proc)
                events = await store.read(session_id, Stream.EVENTS, limit=200)
                raise AssertionError(
                    f"{lines()}\n{[e.data for e in events.events]}\n{said[-3000:]}"
                ) from None
            for _ in range(600):  # 30 s
                snapshot = await store.get_session_state(session_id)
                if snapshot is not None and snapshot["state"] != "working":
                    break
                await anyio.sleep(0.05)
            kill(proc)
    assert snapshot is not None
    assert snapshot["state"] == "completed", snapshot["outcome"]
    assert snapshot["outcome"] == "write close-A1: done"
    assert [line[:2] for line in lines()] == [
        ["write", "open-A1"],
        ["read", "check-A1"],
        ["write", "close-A1"],
    ], "every step reached the upstream once"
    keys = [line[2] for line in lines()]
    assert keys == [f"{session_id}:flow:flow_book.{step}.1" for step in ("open", "check", "close")]
