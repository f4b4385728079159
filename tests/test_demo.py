"""The demo that `scripts/serve` runs: its keys, upstreams and tags work together."""

from __future__ import annotations

import signal
import sys

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import DEMO_CONFIG
from tests.helpers import clean_env, serving

pytestmark = pytest.mark.anyio


async def test_the_demo_serves_each_user_their_tools_and_checks_scopes() -> None:
    command = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(DEMO_CONFIG)]
    with serving(command, clean_env()) as (proc, port):
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
                    session = await client.call_tool(
                        "gateway__run_session", {"message": "Who is maya?"}
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
    # The demo's agent session, by its scripted planner: no API key needed.
    assert "gateway__run_session" in seen["alice"]
    assert "gateway__run_session" not in seen["dave"]
    assert session.structured_content is not None
    assert session.structured_content["status"] == "completed"
    assert session.structured_content["text"].startswith("Maya Lopez (C-1001")
    assert session.structured_content["calls"] == [
        {"tool": "crm__search_customers", "decision": "allowed", "ok": True}
    ]


DEMO_UPSTREAM = DEMO_CONFIG.parent / "upstreams" / "demo.py"
MISSES = [
    ("payments", "refund", {"order_id": "ORD-999999", "amount": 5}, "no order 'ORD-999999'"),
    ("payments", "refund", {"order_id": "ORD-100001", "amount": 90}, "more than the refundable"),
    ("payments", "get_payment", {"payment_id": "PAY-0"}, "no payment 'PAY-0'"),
    ("crm", "get_customer", {"customer_id": "C-0"}, "no customer 'C-0'"),
    ("orders", "get_order", {"order_id": "ORD-999999"}, "no order 'ORD-999999'"),
    ("time", "now", {"timezone": "Mars/Olympus"}, "no time zone 'Mars/Olympus'"),
]


@pytest.mark.parametrize(("upstream", "tool", "arguments", "says"), MISSES)
async def test_a_demo_tool_says_what_it_could_not_find(
    upstream: str, tool: str, arguments: dict[str, object], says: str
) -> None:
    # An exception other than ToolError reaches the model only as "Error executing tool".
    server = StdioServerParameters(command=sys.executable, args=[str(DEMO_UPSTREAM), upstream])
    with anyio.fail_after(30):
        async with Client(server) as client:
            result = await client.call_tool(tool, arguments)
    assert result.is_error
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    assert says in block.text, block.text
