"""The demo that `scripts/serve` runs: its keys, upstreams and tags work together."""

from __future__ import annotations

import signal
import sys

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import DEMO_CONFIG
from tests.test_cli import _clean_env, serving

pytestmark = pytest.mark.anyio


async def test_the_demo_serves_each_user_their_tools_and_checks_scopes() -> None:
    command = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(DEMO_CONFIG)]
    with serving(command, _clean_env()) as (proc, port):
        url = f"http://127.0.0.1:{port}/mcp"
        seen = {}
        for user, key in (("alice", "demo-key-alice-0001"), ("dave", "demo-key-dave-0004")):
            async with (
                httpx2.AsyncClient(headers={"X-API-Key": key}, timeout=10) as http,
                Client(streamable_http_client(url, http_client=http)) as client,
            ):
                seen[user] = [tool.name for tool in (await client.list_tools()).tools]
                if user == "alice":
                    refused = await client.call_tool(
                        "payments__refund", {"order_id": "ORD-100001", "amount": 250}
                    )
                    done = await client.call_tool(
                        "payments__refund", {"order_id": "ORD-100001", "amount": 20}
                    )
        proc.send_signal(signal.SIGINT)
        with anyio.fail_after(20):
            await anyio.to_thread.run_sync(proc.communicate)
    assert "payments__refund" in seen["alice"]
    assert not any(name.startswith("payments__") for name in seen["dave"])  # an intern
    assert refused.is_error
    block = refused.content[0]
    assert isinstance(block, types.TextContent)
    assert "amount 250 exceeds max 100 set by tag tool_refund_small" in block.text
    assert not done.is_error
    assert done.structured_content == {
        "order_id": "ORD-100001",
        "refunded": 20.0,
        "currency": "USD",
    }
