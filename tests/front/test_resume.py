"""Handshake era: a dropped connection is not a cancellation, and the client resumes with
Last-Event-ID, missing nothing; the events wait in the state store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from tests.front.harness import KEYS, running_gateway

pytestmark = pytest.mark.anyio

VERSION = "2025-11-25"


def rpc(ident: int | None, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if ident is not None:
        message["id"] = ident
    if params is not None:
        message["params"] = params
    return message


async def events(response: httpx2.Response) -> Any:
    """(id, data) of each SSE event (test-only parsing of the few fields used here)."""
    event_id, data = None, []
    async for line in response.aiter_lines():
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line:
            text = "\n".join(data)
            if text:  # a priming event carries only an id
                yield event_id, json.loads(text)
            data = []


def progress_of(messages: list[Any]) -> list[int]:
    return [
        m["params"]["progress"] for m in messages if m.get("method") == "notifications/progress"
    ]


async def test_a_dropped_stream_resumes_and_the_call_goes_on(tmp_path: Path) -> None:
    async with (
        running_gateway(tmp_path) as gateway,
        httpx2.AsyncClient(timeout=10) as http,
    ):
        headers = {
            "Authorization": f"Bearer {KEYS['alice']}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        init = {"protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "t"}}
        opened = await http.post(gateway.url, json=rpc(1, "initialize", init), headers=headers)
        headers |= {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
        headers |= {"MCP-Protocol-Version": VERSION}
        await http.post(gateway.url, json=rpc(None, "notifications/initialized"), headers=headers)

        async def cancelled_count(ident: int) -> int:
            call = {"name": "echo__cancelled", "arguments": {}}
            async with http.stream(
                "POST", gateway.url, json=rpc(ident, "tools/call", call), headers=headers
            ) as response:
                if response.headers["content-type"] == "application/json":  # a quick answer
                    await response.aread()
                    return int(response.json()["result"]["content"][0]["text"])
                async for _, data in events(response):
                    if data.get("id") == ident:
                        return int(data["result"]["content"][0]["text"])
            raise AssertionError("no result")

        before = await cancelled_count(2)
        call = {
            "name": "echo__sleep",
            "arguments": {"seconds": 1.0},
            "_meta": {"progressToken": "p"},
        }
        seen: list[Any] = []
        last_id = None
        with anyio.fail_after(10):
            async with http.stream(
                "POST", gateway.url, json=rpc(3, "tools/call", call), headers=headers
            ) as response:
                async for event_id, data in events(response):
                    seen.append(data)
                    last_id = event_id
                    if data.get("method") == "notifications/progress":
                        break  # the connection drops after the first progress
        assert last_id is not None
        assert progress_of(seen) == [1]

        await anyio.sleep(1.3)  # the call finishes meanwhile, nobody listening
        resumed: list[Any] = []
        with anyio.fail_after(10):
            async with http.stream(
                "GET",
                gateway.url,
                headers={**headers, "Accept": "text/event-stream", "Last-Event-ID": last_id},
            ) as response:
                assert response.status_code == 200
                async for _, data in events(response):
                    resumed.append(data)
                    if data.get("id") == 3:
                        break
        assert progress_of(resumed) == list(range(2, 11))  # everything after what was seen
        logs = [d["params"]["data"] for d in resumed if d.get("method") == "notifications/message"]
        assert logs[-1] == {"step": 10}
        assert resumed[-1]["result"]["content"][0]["text"] == "slept"
        assert await cancelled_count(4) == before  # the drop did not cancel the call
