"""The two doors of a 2026-07-28 tools/call: the gateway's own (front/modern_calls.py, with calls to
a 2026-era HTTP upstream as hand-built exchanges) and the SDK's (`server.direct_calls:
false`). The same raw requests go to one gateway of each kind, in front of the same
streamable-HTTP upstream; what a client receives (status, content type, every message of
the response) must be the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest

from gateway import sdk_internals
from gateway.front import modern_calls
from tests.front.harness import KEYS, Gateway
from tests.front.helpers import (
    ENVELOPE,
    MODERN_VERSION,
    gateways,
    modern_call,
    modern_headers,
    modern_post,
)

pytestmark = pytest.mark.anyio


def _list(extra: dict[str, Any] | None = None, *, envelope: bool = True) -> dict[str, Any]:
    params: dict[str, Any] = {"_meta": dict(ENVELOPE)} if envelope else {}
    return {"jsonrpc": "2.0", "id": "l1", "method": "tools/list", "params": params | (extra or {})}


CASES: dict[str, tuple[dict[str, Any], dict[str, str | None]]] = {
    "a call": (modern_call("echo__echo", {"n": 3}), {}),
    "unicode arguments": (modern_call("echo__echo", {"n": 1, "text": "héllo ✓ 日本"}), {}),
    "out of scope": (modern_call("echo__echo", {"n": 50}), {}),
    "denied tool": (modern_call("echo__crash", {}), {}),
    "granted to no one": (modern_call("tiny__echo", {}), {}),
    "no such tool": (modern_call("echo__nothing", {}), {}),
    "arguments against the schema": (modern_call("echo__sleep", {"seconds": "soon"}), {}),
    "a tool error upstream": (modern_call("echo__sleep", {"seconds": None}), {}),
    "param header present": (
        modern_call("echo__echo", {"region": "eu-west"}),
        {"Mcp-Param-Region": "eu-west"},
    ),
    "param header missing": (modern_call("echo__echo", {"region": "eu-west"}), {}),
    "param header wrong": (
        modern_call("echo__echo", {"region": "eu-west"}),
        {"Mcp-Param-Region": "us"},
    ),
    "progress": (modern_call("echo__sleep", {"seconds": 0.3}, {"progressToken": "p1"}), {}),
    "logs": (
        modern_call("echo__sleep", {"seconds": 0.2}, {"io.modelcontextprotocol/logLevel": "info"}),
        {},
    ),
    "logs above the level": (
        modern_call("echo__sleep", {"seconds": 0.2}, {"io.modelcontextprotocol/logLevel": "error"}),
        {},
    ),
    "input required": (modern_call("echo__confirm", {}), {}),
    "input answered": (
        modern_call(
            "echo__confirm",
            {},
            extra={
                "inputResponses": {"confirm": {"action": "accept", "content": {"ok": True}}},
                "requestState": "c",
            },
        ),
        {},
    ),
    "a number beyond 64 bits": (
        modern_call("echo__echo", {"n": 1, "big": 123456789012345678901234567890}),
        {},
    ),
    "no envelope": (modern_call("echo__echo", {}, envelope=False), {}),
    "JSON-RPC 1.0": ({**modern_call("echo__echo", {}), "jsonrpc": "1.0"}, {}),
    "no jsonrpc member": (
        {k: v for k, v in modern_call("echo__echo", {}).items() if k != "jsonrpc"},
        {},
    ),
    "an object id": ({**modern_call("echo__echo", {}), "id": {"a": 1}}, {}),
    "header and parameters both wrong": (
        modern_call("echo__echo", {"region": "eu-west"}, extra={"requestState": 5}),
        {},
    ),
    "name header differs": (modern_call("echo__echo", {}), {"Mcp-Name": "echo__pid"}),
    "method header missing": (modern_call("echo__echo", {}), {"Mcp-Method": None}),
    "arguments not an object": (modern_call("echo__echo", [1, 2]), {}),
    "name not a string": (modern_call(5, {}), {"Mcp-Name": "5"}),  # type: ignore[arg-type]
    "accepts JSON only": (modern_call("echo__echo", {}), {"Accept": "application/json"}),
    "wrong content type": (modern_call("echo__echo", {}), {"Content-Type": "text/plain"}),
    "foreign host": (modern_call("echo__echo", {}), {"Host": "evil.example:80"}),
    "a listing": (_list(), {}),
    "a listing of bob's": (_list(), {"Authorization": f"Bearer {KEYS['bob']}"}),
    "a listing with a cursor": (_list({"cursor": "abc"}), {}),
    "a listing without envelope": (_list(envelope=False), {}),
    "a listing with a bad cursor": (_list({"cursor": 5}), {}),
    "foreign origin": (modern_call("echo__echo", {}), {"Origin": "https://evil.example"}),
}


async def test_both_doors_answer_alike(tmp_path: Path) -> None:
    async with gateways(tmp_path) as both:
        for case, (body, headers) in CASES.items():
            direct = await modern_post(both["direct"], body, **headers)
            sdk = await modern_post(both["sdk"], body, **headers)
            assert direct == sdk, case


async def test_the_cases_reach_what_they_name(tmp_path: Path) -> None:
    """The comparison above is only as good as its cases: each does what it says."""
    async with gateways(tmp_path) as both:
        gateway = both["direct"]
        status, kind, messages = await _post_case(gateway, "a call")
        assert (status, kind) == (200, "application/json")
        result = messages[0]["result"]
        assert result["structuredContent"] == {"n": 3}
        assert result["resultType"] == "complete"
        assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "mcp-tag-gateway"
        _, _, messages = await _post_case(gateway, "a number beyond 64 bits")
        assert messages[0]["result"]["structuredContent"]["big"] == 123456789012345678901234567890
        _, _, messages = await _post_case(gateway, "out of scope")
        assert messages[0]["result"]["isError"] is True
        assert "exceeds max 5" in messages[0]["result"]["content"][0]["text"]
        for case in ("denied tool", "granted to no one", "no such tool"):
            _, _, messages = await _post_case(gateway, case)
            name = CASES[case][0]["params"]["name"]
            assert messages[0]["error"] == {"code": -32602, "message": f"Unknown tool: {name}"}
        _, _, messages = await _post_case(gateway, "param header missing")
        assert messages[0]["error"]["code"] == types.HEADER_MISMATCH
        status, kind, messages = await _post_case(gateway, "progress")
        assert kind == "text/event-stream"
        assert [m["params"]["progress"] for m in messages[:-1]] == [1, 2, 3]
        assert messages[-1]["result"]["content"][0]["text"] == "slept"
        _, kind, messages = await _post_case(gateway, "logs")
        assert [m["method"] for m in messages[:-1]] == ["notifications/message"] * 2
        _, kind, messages = await _post_case(gateway, "logs above the level")
        assert kind == "application/json"
        _, _, messages = await _post_case(gateway, "input required")
        assert messages[0]["result"]["resultType"] == "input_required"
        _, _, messages = await _post_case(gateway, "input answered")
        assert messages[0]["result"]["content"][0]["text"] == "accept {'ok': True}"
        assert (await _post_case(gateway, "accepts JSON only"))[0] == 406
        assert (await _post_case(gateway, "foreign host"))[0] == 421
        assert (await _post_case(gateway, "foreign origin"))[0] == 403
        _, kind, messages = await _post_case(gateway, "a listing")
        listing = messages[0]["result"]
        assert "echo__echo" in [tool["name"] for tool in listing["tools"]]
        assert "echo__crash" not in [tool["name"] for tool in listing["tools"]]
        assert listing["cacheScope"] == "private"
        _, kind, messages = await _post_case(gateway, "a listing of bob's")
        assert [tool["name"] for tool in messages[0]["result"]["tools"]] == [
            "echo__pid",
            "tiny__echo",
        ]


async def _post_case(gateway: Gateway, name: str) -> tuple[int, str, list[Any]]:
    body, headers = CASES[name]
    return await modern_post(gateway, body, **headers)


async def test_closing_the_response_stream_cancels_the_call_upstream(tmp_path: Path) -> None:
    async with gateways(tmp_path) as both:
        gateway = both["direct"]

        async def cancelled() -> int:
            _, _, messages = await modern_post(gateway, modern_call("echo__cancelled", {}))
            return int(messages[0]["result"]["content"][0]["text"])

        before = await cancelled()
        body = modern_call("echo__sleep", {"seconds": 10}, {"progressToken": 1})
        async with (
            httpx2.AsyncClient(timeout=20) as http,
            http.stream(
                "POST", gateway.url, content=json.dumps(body), headers=modern_headers(body)
            ) as response,
        ):
            async for line in response.aiter_lines():
                if line.startswith("data:"):  # the first progress: the call is running
                    break
        for _ in range(100):  # the upstream sees the cancellation soon after
            if await cancelled() == before + 1:
                break
            await anyio.sleep(0.05)
        assert await cancelled() == before + 1


async def test_a_silent_call_is_kept_alive_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After PING_INTERVAL of silence both doors commit to SSE and send comments."""
    monkeypatch.setattr(modern_calls, "PING_INTERVAL", 0.1)
    monkeypatch.setattr(*sdk_internals.sse_ping_interval_site(), 0.1)
    body = modern_call("echo__sleep", {"seconds": 0.5})
    async with gateways(tmp_path) as both:
        answers = [await modern_post(gateway, body) for gateway in both.values()]
        assert answers[0] == answers[1]
        status, kind, messages = answers[0]
        assert (status, kind) == (200, "text/event-stream")
        assert messages[0]["result"]["content"][0]["text"] == "slept"
        async with httpx2.AsyncClient(timeout=20) as http:
            raw = await http.post(
                both["direct"].url, content=json.dumps(body), headers=modern_headers(body)
            )
        assert ": ping" in raw.text


def test_serialized_listings_stay_within_their_budget() -> None:
    listings = modern_calls.Listings(budget=100)
    wires: list[dict[tuple[str, str], bytes]] = [{}, {}, {}]
    for wire in wires:
        listings.keep(wire, ("tools/list", MODERN_VERSION), b"x" * 40)
    assert [len(wire) for wire in wires] == [0, 1, 1]  # the oldest went
    assert listings.size == 80
