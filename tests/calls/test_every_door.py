"""Every door reaches an upstream's tool through the call service, and only through it:
the same call made at the 2026-07-28 gateway door, the handshake-era gateway door, the
SDK's door in both eras, and the SDK's door over a stream transport (as `gateway stdio`
serves it) reaches a recording in-process upstream once, from `ToolService.call`, and
leaves the same audit record. A refused call reaches nothing, at every door alike."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.memory import create_client_server_memory_streams

from gateway import __version__
from gateway.audit import arguments_digest
from gateway.auth import Credential
from gateway.calls import ToolService
from gateway.front.caller import current_credential
from gateway.front.server import Front
from gateway.own_tools import OwnTool, own_upstream
from gateway.principal import Principal
from gateway.upstreams.requests import UpstreamRequests
from tests.front.harness import ACME, GLOBEX, Gateway, gateway_yaml, running_gateway

pytestmark = pytest.mark.anyio

ACME_RECORDS = ACME.replace(
    'allowed_tools: ["echo__*"]', 'allowed_tools: ["echo__*", "gateway__record"]'
).replace(
    "          echo__echo: {n: {max: 5}}",
    "          echo__echo: {n: {max: 5}}\n          gateway__record: {n: {max: 9}}",
)
assert ACME_RECORDS.count("gateway__record") == 2


class Recorder:
    """An upstream tool that keeps every call it receives, and who sent it: the frame
    that called the upstream connection's call_tool."""

    def __init__(self) -> None:
        self.received: list[Mapping[str, Any]] = []
        self.senders: list[str] = []

    def tool(self) -> OwnTool:
        async def record(arguments: Mapping[str, Any]) -> types.CallToolResult:
            self.received.append(dict(arguments))
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=f"recorded {arguments}")]
            )

        schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
        return OwnTool(types.Tool(name="record", input_schema=schema), record)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    original = UpstreamRequests.call_tool

    async def call_tool(self: UpstreamRequests, *args: Any, **kwargs: Any) -> Any:
        code = sys._getframe(1).f_code  # the function awaiting this call
        sender = "ToolService.call" if code is ToolService.call.__code__ else code.co_qualname
        recorder.senders.append(sender)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(UpstreamRequests, "call_tool", call_tool)
    return recorder


@asynccontextmanager
async def gateway(tmp_path: Path, recorder: Recorder, direct: bool) -> AsyncIterator[Gateway]:
    config = gateway_yaml() + f"server: {{direct_calls: {str(direct).lower()}}}\n"
    async with running_gateway(
        tmp_path,
        config,
        {"acme": ACME_RECORDS, "globex": GLOBEX},
        own=own_upstream({"record": recorder.tool()}),
    ) as running:
        yield running


def calls_audited(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in e.items() if k not in ("at", "latency_ms")}
        for e in events
        if e["event"] == "tool_call" and e["tool"] == "gateway__record"
    ]


async def make_calls(client: Client) -> list[tuple[bool, str]]:
    """The call and a refused one (out of scope: a tool error), as the client saw them."""
    answers = []
    for arguments in ({"n": 3}, {"n": 50}):
        result = await client.call_tool("gateway__record", arguments)
        block = result.content[0]
        assert isinstance(block, types.TextContent)
        answers.append((bool(result.is_error), block.text))
    return answers


EXPECTED_ANSWERS = [
    (False, "recorded {'n': 3}"),
    (True, "gateway__record: not permitted: n 50 exceeds max 9 set by tag support"),
]


@pytest.mark.parametrize(
    ("door", "direct", "mode"),
    [
        ("gateway door, 2026-07-28", True, "auto"),
        ("gateway door, handshake era", True, "legacy"),
        ("SDK door, 2026-07-28", False, "auto"),
        ("SDK door, handshake era", False, "legacy"),
    ],
)
async def test_each_http_door_reaches_the_upstream_only_through_the_call_service(
    tmp_path: Path,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    door: str,
    direct: bool,
    mode: str,
) -> None:
    sdk_served: list[str] = []  # the SDK door's handler, to tell the doors apart
    handler = Front.call_tool

    async def call_tool(self: Front, ctx: Any, params: types.CallToolRequestParams) -> Any:
        sdk_served.append(params.name)
        return await handler(self, ctx, params)

    monkeypatch.setattr(Front, "call_tool", call_tool)
    async with gateway(tmp_path, recorder, direct) as running:
        async with running.client("alice", mode) as alice:
            if mode == "legacy":
                assert alice.protocol_version == "2025-11-25"
            assert await make_calls(alice) == EXPECTED_ANSWERS
        events = calls_audited(running.app.state.runtime.audit.read())
    assert len(sdk_served) == (0 if direct else 2), door
    assert recorder.received == [{"n": 3}]
    assert recorder.senders == ["ToolService.call"]
    assert events == EXPECTED_AUDIT, door


EXPECTED_AUDIT = [
    {
        "event": "tool_call",
        "user": "alice",
        "org": "acme",
        "tool": "gateway__record",
        "decision": "allowed",
        "reason": "granted by tag support; arguments within its scope",
        "arguments_sha256": arguments_digest({"n": 3}),
        "ended": "ok",
    },
    {
        "event": "tool_call",
        "user": "alice",
        "org": "acme",
        "tool": "gateway__record",
        "decision": "out_of_scope",
        "reason": "n 50 exceeds max 9 set by tag support",
        "arguments_sha256": arguments_digest({"n": 50}),
    },
]


async def test_the_stream_door_reaches_it_the_same_way(tmp_path: Path, recorder: Recorder) -> None:
    """`gateway stdio`'s door: the SDK's server over a stream transport (memory streams
    here, standard input and output there), the caller fixed for the process."""
    async with gateway(tmp_path, recorder, True) as running:
        runtime = running.app.state.runtime
        front = Front(runtime, __version__)
        alice = Credential(Principal("alice", "acme"), "local", "local:alice")
        reset = current_credential.set(alice)  # as serve_stdio sets it, for the server's tasks
        try:
            async with (
                front.running(),
                create_client_server_memory_streams() as (client_streams, (read, write)),
                anyio.create_task_group() as tasks,
            ):
                server = front.server
                tasks.start_soon(server.run, read, write, server.create_initialization_options())
                async with Client(_Streams(client_streams)) as client:
                    assert await make_calls(client) == EXPECTED_ANSWERS
                tasks.cancel_scope.cancel()
        finally:
            current_credential.reset(reset)
        events = calls_audited(runtime.audit.read())
    assert recorder.received == [{"n": 3}]
    assert recorder.senders == ["ToolService.call"]
    assert events == EXPECTED_AUDIT


class _Streams:
    """Ready-made streams as an SDK client transport."""

    def __init__(self, streams: Any) -> None:
        self._streams = streams

    async def __aenter__(self) -> Any:
        return self._streams

    async def __aexit__(self, *_exc: object) -> None:
        return None


def test_the_call_service_is_what_the_doors_call() -> None:
    # Guards the spy above: the code it expects is the service's own method's.
    assert ToolService.call.__code__.co_qualname == "ToolService.call"
