"""The two doors of a 2026-07-28 tools/call: the gateway's own (front/modern_calls.py, with calls to
a 2026-era HTTP upstream as hand-built exchanges) and the SDK's (`server.direct_calls:
false`). The same raw requests go to one gateway of each kind, in front of the same
streamable-HTTP upstream; what a client receives (status, content type, every message of
the response) must be the same."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest

from gateway import sdk_internals
from gateway.front import modern_calls
from tests.conftest import ROOT
from tests.front.harness import KEYS, Gateway, key_entries, running_gateway
from tests.upstreams.helpers import http_echo

pytestmark = pytest.mark.anyio

VERSION = "2026-07-28"
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": VERSION,
    "io.modelcontextprotocol/clientInfo": {"name": "differential", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def config(url: str, direct: bool) -> str:
    return (
        f"server: {{direct_calls: {'true' if direct else 'false'}}}\n"
        "tags: {dir: orgs, watch: true}\n"
        "auth:\n  api_keys:\n" + key_entries() + "upstreams:\n"
        f"  echo: {{transport: streamable_http, url: '{url}', call_timeout: 10}}\n"
        "  tiny:\n"
        "    transport: stdio\n"
        f"    command: {sys.executable}\n"
        "    args: [-m, bench.servers.tiny]\n"
        f"    cwd: {ROOT}\n"
        f"    env: {{PYTHONPATH: {ROOT}}}\n"
    )


@asynccontextmanager
async def gateways(tmp_path: Path) -> AsyncIterator[dict[str, Gateway]]:
    with http_echo() as url:
        async with AsyncExitStack() as stack:
            found = {}
            for name, direct in (("direct", True), ("sdk", False)):
                directory = tmp_path / name
                directory.mkdir()
                found[name] = await stack.enter_async_context(
                    running_gateway(directory, config(url, direct))
                )
            for gateway in found.values():  # both ready, with the upstream's tools
                await _ready(gateway)
            yield found


async def _ready(gateway: Gateway) -> None:
    with anyio.fail_after(20):
        while True:
            answer = await _post(gateway, _call("echo__pid", {}))
            if answer[2] and "result" in answer[2][-1]:
                return
            await anyio.sleep(0.1)


def _call(
    name: str,
    arguments: Any,
    meta: dict[str, Any] | None = None,
    *,
    envelope: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    wanted = {**(ENVELOPE if envelope else {}), **(meta or {})}
    if wanted:
        params["_meta"] = wanted
    return {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {**params, **(extra or {})},
    }


def _list(extra: dict[str, Any] | None = None, *, envelope: bool = True) -> dict[str, Any]:
    params: dict[str, Any] = {"_meta": dict(ENVELOPE)} if envelope else {}
    return {"jsonrpc": "2.0", "id": "l1", "method": "tools/list", "params": params | (extra or {})}


def _headers(body: dict[str, Any], **changes: str | None) -> dict[str, str]:
    name = body["params"].get("name")
    headers: dict[str, str | None] = {
        "Authorization": f"Bearer {KEYS['alice']}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": VERSION,
        "Mcp-Method": str(body["method"]),
        "Mcp-Name": None if name is None else str(name),
    }
    headers.update(changes)
    return {key: value for key, value in headers.items() if value is not None}


async def _post(
    gateway: Gateway, body: dict[str, Any], **headers: str | None
) -> tuple[int, str, list[Any]]:
    """Status, content type and the JSON-RPC messages of the response, in order."""
    async with httpx2.AsyncClient(timeout=20) as http:
        response = await http.post(
            gateway.url, content=json.dumps(body), headers=_headers(body, **headers)
        )
    kind = response.headers.get("content-type", "").split(";")[0]
    if kind == "text/event-stream":
        messages = [
            json.loads(line[len("data:") :])
            for line in response.text.splitlines()
            if line.startswith("data:")
        ]
    elif kind == "application/json":
        messages = [response.json()]
    else:
        messages = [response.text]
    return response.status_code, kind, messages


CASES: dict[str, tuple[dict[str, Any], dict[str, str | None]]] = {
    "a call": (_call("echo__echo", {"n": 3}), {}),
    "unicode arguments": (_call("echo__echo", {"n": 1, "text": "héllo ✓ 日本"}), {}),
    "out of scope": (_call("echo__echo", {"n": 50}), {}),
    "denied tool": (_call("echo__crash", {}), {}),
    "granted to no one": (_call("tiny__echo", {}), {}),
    "no such tool": (_call("echo__nothing", {}), {}),
    "arguments against the schema": (_call("echo__sleep", {"seconds": "soon"}), {}),
    "a tool error upstream": (_call("echo__sleep", {"seconds": None}), {}),
    "param header present": (
        _call("echo__echo", {"region": "eu-west"}),
        {"Mcp-Param-Region": "eu-west"},
    ),
    "param header missing": (_call("echo__echo", {"region": "eu-west"}), {}),
    "param header wrong": (_call("echo__echo", {"region": "eu-west"}), {"Mcp-Param-Region": "us"}),
    "progress": (_call("echo__sleep", {"seconds": 0.3}, {"progressToken": "p1"}), {}),
    "logs": (
        _call("echo__sleep", {"seconds": 0.2}, {"io.modelcontextprotocol/logLevel": "info"}),
        {},
    ),
    "logs above the level": (
        _call("echo__sleep", {"seconds": 0.2}, {"io.modelcontextprotocol/logLevel": "error"}),
        {},
    ),
    "input required": (_call("echo__confirm", {}), {}),
    "input answered": (
        _call(
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
        _call("echo__echo", {"n": 1, "big": 123456789012345678901234567890}),
        {},
    ),
    "no envelope": (_call("echo__echo", {}, envelope=False), {}),
    "JSON-RPC 1.0": ({**_call("echo__echo", {}), "jsonrpc": "1.0"}, {}),
    "no jsonrpc member": (
        {k: v for k, v in _call("echo__echo", {}).items() if k != "jsonrpc"},
        {},
    ),
    "an object id": ({**_call("echo__echo", {}), "id": {"a": 1}}, {}),
    "header and parameters both wrong": (
        _call("echo__echo", {"region": "eu-west"}, extra={"requestState": 5}),
        {},
    ),
    "name header differs": (_call("echo__echo", {}), {"Mcp-Name": "echo__pid"}),
    "method header missing": (_call("echo__echo", {}), {"Mcp-Method": None}),
    "arguments not an object": (_call("echo__echo", [1, 2]), {}),
    "name not a string": (_call(5, {}), {"Mcp-Name": "5"}),  # type: ignore[arg-type]
    "accepts JSON only": (_call("echo__echo", {}), {"Accept": "application/json"}),
    "wrong content type": (_call("echo__echo", {}), {"Content-Type": "text/plain"}),
    "foreign host": (_call("echo__echo", {}), {"Host": "evil.example:80"}),
    "a listing": (_list(), {}),
    "a listing of bob's": (_list(), {"Authorization": f"Bearer {KEYS['bob']}"}),
    "a listing with a cursor": (_list({"cursor": "abc"}), {}),
    "a listing without envelope": (_list(envelope=False), {}),
    "a listing with a bad cursor": (_list({"cursor": 5}), {}),
    "foreign origin": (_call("echo__echo", {}), {"Origin": "https://evil.example"}),
}


async def test_both_doors_answer_alike(tmp_path: Path) -> None:
    async with gateways(tmp_path) as both:
        for case, (body, headers) in CASES.items():
            direct = await _post(both["direct"], body, **headers)
            sdk = await _post(both["sdk"], body, **headers)
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
    return await _post(gateway, body, **headers)


async def test_closing_the_response_stream_cancels_the_call_upstream(tmp_path: Path) -> None:
    async with gateways(tmp_path) as both:
        gateway = both["direct"]

        async def cancelled() -> int:
            _, _, messages = await _post(gateway, _call("echo__cancelled", {}))
            return int(messages[0]["result"]["content"][0]["text"])

        before = await cancelled()
        body = _call("echo__sleep", {"seconds": 10}, {"progressToken": 1})
        async with (
            httpx2.AsyncClient(timeout=20) as http,
            http.stream(
                "POST", gateway.url, content=json.dumps(body), headers=_headers(body)
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
    body = _call("echo__sleep", {"seconds": 0.5})
    async with gateways(tmp_path) as both:
        answers = [await _post(gateway, body) for gateway in both.values()]
        assert answers[0] == answers[1]
        status, kind, messages = answers[0]
        assert (status, kind) == (200, "text/event-stream")
        assert messages[0]["result"]["content"][0]["text"] == "slept"
        async with httpx2.AsyncClient(timeout=20) as http:
            raw = await http.post(
                both["direct"].url, content=json.dumps(body), headers=_headers(body)
            )
        assert ": ping" in raw.text


def test_serialized_listings_stay_within_their_budget() -> None:
    listings = modern_calls.Listings(budget=100)
    wires: list[dict[tuple[str, str], bytes]] = [{}, {}, {}]
    for wire in wires:
        listings.keep(wire, ("tools/list", VERSION), b"x" * 40)
    assert [len(wire) for wire in wires] == [0, 1, 1]  # the oldest went
    assert listings.size == 80
