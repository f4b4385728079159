"""Helpers shared by the front's test modules: the protocol modes an SDK client speaks, a
sampling model, raw JSON-RPC requests of both eras (a 2026-07-28 `tools/call` with its
envelope and headers; a handshake-era session and what it is answered), and the gateways
that compare the two doors of a call (`server.direct_calls`)."""

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
from mcp.client.session import ClientRequestContext

from tests.conftest import ROOT
from tests.front.harness import KEYS, Gateway, key_entries, running_gateway
from tests.upstreams.helpers import http_echo

MODES = ["auto", "legacy"]
"""auto: two SDK 2.3 peers settle on 2026-07-28; legacy: the 2025-11-25 handshake."""


def model(name: str) -> object:
    """A sampling callback answering as `name`, slowly enough that two callers' calls are
    in flight at once."""

    async def answer(
        _ctx: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        await anyio.sleep(0.2)  # both calls are in flight at once
        asked = params.messages[0].content
        assert isinstance(asked, types.TextContent)
        reply = types.TextContent(type="text", text=f"{name} heard {asked.text!r}")
        return types.CreateMessageResult(role="assistant", model=name, content=reply)

    return answer


def rpc(ident: int | None, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-RPC request (a notification when `ident` is None)."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if ident is not None:
        message["id"] = ident
    if params is not None:
        message["params"] = params
    return message


# 2026-07-28: every request carries its envelope; no session.

MODERN_VERSION = "2026-07-28"
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
    "io.modelcontextprotocol/clientInfo": {"name": "differential", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def modern_call(
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


def modern_headers(body: dict[str, Any], **changes: str | None) -> dict[str, str]:
    """Alice's headers for `body`, with `changes` (None drops a header)."""
    name = body["params"].get("name")
    headers: dict[str, str | None] = {
        "Authorization": f"Bearer {KEYS['alice']}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN_VERSION,
        "Mcp-Method": str(body["method"]),
        "Mcp-Name": None if name is None else str(name),
    }
    headers.update(changes)
    return {key: value for key, value in headers.items() if value is not None}


async def modern_post(
    gateway: Gateway, body: dict[str, Any], **headers: str | None
) -> tuple[int, str, list[Any]]:
    """Status, content type and the JSON-RPC messages of the response, in order."""
    async with httpx2.AsyncClient(timeout=20) as http:
        response = await http.post(
            gateway.url, content=json.dumps(body), headers=modern_headers(body, **headers)
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


# The two doors of a call, side by side in front of the same upstreams.


def doors_config(url: str, direct: bool) -> str:
    """A gateway config in front of the streamable-HTTP echo at `url` and the stdio `tiny`,
    answering calls by its own door (`direct`) or the SDK's."""
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
    """Two gateways, "direct" (the gateway's own door) and "sdk", in front of one HTTP
    echo, both ready: each lists the upstream's tools."""
    with http_echo() as url:
        async with AsyncExitStack() as stack:
            found = {}
            for name, direct in (("direct", True), ("sdk", False)):
                directory = tmp_path / name
                directory.mkdir()
                found[name] = await stack.enter_async_context(
                    running_gateway(directory, doors_config(url, direct))
                )
            for gateway in found.values():
                await _ready(gateway)
            yield found


async def _ready(gateway: Gateway) -> None:
    with anyio.fail_after(20):
        while True:
            answer = await modern_post(gateway, modern_call("echo__pid", {}))
            if answer[2] and "result" in answer[2][-1]:
                return
            await anyio.sleep(0.1)


def chatty_config(direct: bool) -> str:
    """A gateway config in front of the chatty stdio upstream (questions and progress at
    once), answering calls by its own door (`direct`) or the SDK's."""
    return (
        f"server: {{direct_calls: {'true' if direct else 'false'}}}\n"
        "tags: {dir: orgs, watch: true}\n"
        "auth:\n  api_keys:\n" + key_entries() + "upstreams:\n"
        "  echo:\n    transport: stdio\n"
        f"    command: {sys.executable}\n    args: [-m, tests.upstreams.servers.chatty]\n"
        f"    cwd: {ROOT}\n    env: {{PYTHONPATH: {ROOT}}}\n    call_timeout: 20\n"
    )


# The handshake era: initialize, then requests on the session.

SESSION_VERSION = "2025-11-25"

Answer = tuple[int, str, bool, list[Any]]
"""Status, content type, whether the session header came back, and the events: each the
message (None for a priming event) and whether it carried an event id."""

ASKING: dict[str, Any] = {"sampling": {}, "elicitation": {"form": {}}}
"""The capabilities of a caller that may be asked questions during its calls."""
REPLIES = {
    "sampling/createMessage": {
        "role": "assistant",
        "content": {"type": "text", "text": "yes"},
        "model": "m",
    },
    "elicitation/create": {"action": "accept", "content": {"ok": True}},
}
"""A caller's reply to each question an upstream may ask it."""


async def open_session(
    gateway: Gateway,
    user: str = "alice",
    version: str = SESSION_VERSION,
    capabilities: dict[str, Any] | None = None,
) -> dict[str, str]:
    """A handshake (initialize, then initialized); returns the session's request headers."""
    headers = {
        "Authorization": f"Bearer {KEYS[user]}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    }
    initialize = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": capabilities or {},
            "clientInfo": {"name": "differential", "version": "1"},
        },
    }
    async with httpx2.AsyncClient(timeout=20) as http:
        opened = await http.post(gateway.url, content=json.dumps(initialize), headers=headers)
        assert opened.status_code == 200, opened.text
        headers["Mcp-Session-Id"] = opened.headers["mcp-session-id"]
        headers["MCP-Protocol-Version"] = version
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        done = await http.post(gateway.url, content=json.dumps(initialized), headers=headers)
        assert done.status_code == 202
    return headers


def session_call(
    name: Any, arguments: Any, meta: dict[str, Any] | None = None, **extra: Any
) -> Any:
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    if meta:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params, **extra}


async def session_post(
    gateway: Gateway, headers: dict[str, str], body: Any, **changes: str | None
) -> Answer:
    """`body` sent with the session's `headers` and `changes` (None drops a header)."""
    merged: dict[str, str | None] = {**headers, **changes}
    sent = {key: value for key, value in merged.items() if value is not None}
    async with httpx2.AsyncClient(timeout=20) as http:
        response = await http.post(gateway.url, content=json.dumps(body), headers=sent)
    kind = response.headers.get("content-type", "").split(";")[0]
    same_session = response.headers.get("mcp-session-id") == headers.get("Mcp-Session-Id")
    if kind == "text/event-stream":
        events = sse_events(response.text)
    elif kind == "application/json":
        events = [(response.json(), False)] if response.content else []
    else:
        events = [(response.text, False)]
    return response.status_code, kind, same_session, events


def said_in(answer: Answer) -> tuple[int, bool, list[Any]]:
    """What an answer says, whatever its form: status, whether it named the session, and
    its JSON-RPC messages (SSE priming events are not messages)."""
    status, _, same_session, events = answer
    return status, same_session, [message for message, _ in events if message is not None]


async def read_messages(response: httpx2.Response, *, with_ids: bool = False) -> AsyncIterator[Any]:
    """The JSON-RPC messages of a response as they come (SSE or JSON); with `with_ids`,
    each with its event id (None without one), and priming events as (None, id)."""
    if response.headers["content-type"].startswith("application/json"):
        message = json.loads(await response.aread())
        yield (message, None) if with_ids else message
        return
    block: list[str] = []
    async for line in response.aiter_lines():
        if line:
            block.append(line)
            continue
        fields = dict(_field(entry) for entry in block if not entry.startswith(":"))
        block = []
        if fields.get("data"):
            message = json.loads(fields["data"])
            yield (message, fields.get("id")) if with_ids else message
        elif with_ids and "id" in fields:
            yield None, fields["id"]


def event_order(event_id: str) -> tuple[int, ...]:
    """Where an event id stands in its stream (`<ms>-<seq>/<stream>`, events.py)."""
    position = event_id.split("/")[0]
    return tuple(int(part) for part in position.split("-"))


def sse_events(text: str) -> list[tuple[Any, bool]]:
    """The events of a whole SSE body: each its message (None for a priming event) and
    whether it carried an event id."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        fields = dict(_field(line) for line in lines)
        data = fields.get("data", "")
        events.append((json.loads(data) if data else None, "id" in fields))
    return events


def _field(line: str) -> tuple[str, str]:
    name, _, value = line.partition(": ")
    return name, value


def audit_events(gateway: Gateway) -> list[dict[str, object]]:
    """What the gateway's audit file holds, once its pending batch is written."""
    events: list[dict[str, object]] = gateway.app.state.runtime.audit.read()
    return events
