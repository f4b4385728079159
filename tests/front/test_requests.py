"""One caller's malformed request never hurts another caller: raw requests at /mcp, in
both protocol eras, at both doors (the gateway's own fast paths and the SDK's), in front
of a real stdio upstream whose one session every caller shares.

What cannot be sent upstream (text that is not valid Unicode, `NaN` and `Infinity`) is
refused at parse time as `-32700` (HTTP 400), so it never reaches an upstream leg; headers
the SDK refuses are answered as JSON-RPC errors too."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from tests.front.harness import KEYS, Gateway, gateway_yaml, running_gateway
from tests.front.helpers import audit_events, open_session

pytestmark = pytest.mark.anyio

MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"
ERAS = [MODERN, HANDSHAKE]
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "hostile", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


@pytest.fixture(scope="module", params=["direct", "sdk"])
async def door(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    """A gateway whose tools/call requests the gateway serves itself (direct), or the SDK."""
    server = "" if request.param == "direct" else "server: {direct_calls: false}\n"
    directory = tmp_path_factory.mktemp(request.param)
    async with running_gateway(directory, server + gateway_yaml()) as gateway:
        yield gateway


async def headers_for(gateway: Gateway, era: str, user: str) -> dict[str, str]:
    """A request's headers: a 2026-07-28 request's own, or an open session's."""
    if era == HANDSHAKE:
        return await open_session(gateway, user)
    return {
        "Authorization": f"Bearer {KEYS[user]}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
    }


def call(era: str, name: str, arguments: Any, request_id: Any = 7) -> str:
    """A tools/call body as `json.dumps` writes it, which is what a careless client sends:
    a lone surrogate as a `\\ud800` escape, non-finite numbers as NaN and Infinity."""
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    if era == MODERN:
        params["_meta"] = ENVELOPE
    return json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
    )


async def post(
    gateway: Gateway, headers: dict[str, str], body: str, name: str = "echo__echo"
) -> httpx2.Response:
    sent = {**headers, "Mcp-Name": name} if "Mcp-Method" in headers else headers
    async with httpx2.AsyncClient(timeout=20) as http:
        return await http.post(gateway.url, content=body.encode(), headers=sent)


def answer(response: httpx2.Response) -> Any:
    """The JSON-RPC message of a response, JSON or SSE."""
    if response.headers["content-type"].startswith("text/event-stream"):
        data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
        return json.loads(data[-1])
    return response.json()


async def upstream_pid(gateway: Gateway, era: str) -> str:
    """The echo upstream's process id, asked by bob (who is granted echo__pid)."""
    headers = await headers_for(gateway, era, "bob")
    response = await post(gateway, headers, call(era, "echo__pid", {}, 1), "echo__pid")
    assert response.status_code == 200, response.text
    result = answer(response)["result"]
    assert not result["isError"], result
    pid: str = result["content"][0]["text"]
    return pid


def assert_parse_error(response: httpx2.Response) -> str:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["id"] is None
    assert body["error"]["code"] == -32700
    message: str = body["error"]["message"]
    assert message.startswith("Parse error: ")
    return message


UNENCODABLE: list[Any] = [
    {"n": 1, "text": "\ud800"},  # a high surrogate without its low half
    {"n": 1, "text": "\udc00\ud800"},  # the halves in the wrong order
    {"n": 1, "\udfff": "in a key"},
    {"n": 1, "nested": [{"deep": ["ok", "x\ud83d"]}]},
]


@pytest.mark.parametrize("era", ERAS)
async def test_text_that_is_not_unicode_is_refused_and_harms_no_one(
    door: Gateway, era: str
) -> None:
    """The issue's case: lone surrogates in a call's arguments took the upstream's shared
    session down (2026-07-28), five of them opened its breaker, and then every caller's
    calls were refused. Now each is a parse error, and bob's call afterwards reaches the
    same upstream process."""
    before = await upstream_pid(door, era)
    connection = door.app.state.front.pool.connections["echo"]
    alice = await headers_for(door, era, "alice")
    for attempt in range(2 * connection.breaker.threshold):
        arguments = UNENCODABLE[attempt % len(UNENCODABLE)]
        message = assert_parse_error(await post(door, alice, call(era, "echo__echo", arguments)))
        assert "surrogate" in message
    # Elsewhere in the request as well: the tool's name, the request id.
    assert_parse_error(await post(door, alice, call(era, "echo__\ud800", {}), "echo__x"))
    assert_parse_error(await post(door, alice, call(era, "echo__echo", {}, "id-\udbff")))
    assert connection.breaker.failures == 0
    assert await upstream_pid(door, era) == before


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
async def test_numbers_that_are_not_json_are_a_parse_error(
    door: Gateway, era: str, constant: str
) -> None:
    alice = await headers_for(door, era, "alice")
    value = float(constant.replace("Infinity", "inf"))
    for body in (
        call(era, "echo__echo", {"n": value}),
        call(era, "echo__echo", {"free": [value]}),
        # A number beyond 64 bits sends the body down the standard library's parser.
        call(era, "echo__echo", {"n": value, "big": 2**70}),
        call(era, "echo__echo", {}, value),  # as the request id: a silent 202 before
    ):
        assert "NaN" in body or "Infinity" in body
        assert_parse_error(await post(door, alice, body))
    # The same calls with JSON numbers are served.
    response = await post(door, alice, call(era, "echo__echo", {"n": 1, "big": 2**70}))
    assert answer(response)["result"]["structuredContent"] == {"n": 1, "big": 2**70}


@pytest.mark.parametrize("era", ERAS)
async def test_refused_headers_are_answered_as_json_rpc_errors(door: Gateway, era: str) -> None:
    alice = await headers_for(door, era, "alice")
    body = call(era, "echo__echo", {"n": 1})
    refusals: list[tuple[dict[str, str | None], int]] = [
        ({"Content-Type": None}, 400),
        ({"Content-Type": "text/plain"}, 400),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 400),
        ({"Accept": "text/html"}, 406),
        ({"Accept": "application/json"}, 406),
    ]
    for changes, status in refusals:
        merged: dict[str, str | None] = {**alice, **changes}
        headers = {key: value for key, value in merged.items() if value is not None}
        response = await post(door, headers, body)
        assert response.status_code == status, (changes, response.text)
        assert response.headers["content-type"] == "application/json", changes
        refused = response.json()
        assert refused["id"] is None
        assert refused["error"]["code"] == -32600, changes
        assert refused["error"]["message"], changes


@pytest.mark.parametrize("era", ERAS)
async def test_arguments_nested_too_deep_are_the_callers_error(door: Gateway, era: str) -> None:
    """Arguments 300 levels deep (well within what a JSON parser reads: the gateway's
    reads 1,024) went through every check and failed in the upstream leg's writer, and
    1,000 deep failed in the schema check: an internal error, logged with its traceback,
    and the second without an audit record. Now they are the caller's invalid input, as
    what else JSON cannot carry is, whichever door reads them."""
    before = await upstream_pid(door, era)
    alice = await headers_for(door, era, "alice")
    codes = []
    for depth in (300, 1000):
        deep = "[" * depth + "1" + "]" * depth
        body = call(era, "echo__echo", {"n": 1}).replace('"n": 1', f'"n": 1, "x": {deep}')
        error = answer(await post(door, alice, body))["error"]
        assert "internal" not in error["message"].lower(), error
        codes.append(error["code"])
    # The call service's refusal (-32602, audited) where the gateway reads the request;
    # where the SDK does (direct_calls off), its parser stops at 255 levels for a
    # session's request, and past orjson's 1,024 for a 2026-07-28 one: a parse error
    # (-32700), before any call.
    if door.config.settings.server.direct_calls:
        assert codes == [-32602, -32602]
    elif era == HANDSHAKE:
        assert codes == [-32700, -32700]
    else:
        assert codes == [-32602, -32700]
    refused = codes.count(-32602)
    assert await upstream_pid(door, era) == before
    events = [e for e in audit_events(door) if e.get("tool") == "echo__echo"]
    assert [e["decision"] for e in events[len(events) - refused :]] == [
        "invalid_arguments"
    ] * refused
