"""Every door reaches an upstream's tool through the call service, and only through it:
the same call made at the 2026-07-28 gateway door, the handshake-era gateway door, the
SDK's door in both eras, and the SDK's door over a stream transport (as `gateway stdio`
serves it) reaches a recording in-process upstream once, from `ToolService.call`, and
leaves the same audit record. A refused call reaches nothing, at every door alike.

The real `gateway stdio` command, run as a child with the SDK's stdio client, is the
last case: there the upstream is a recording process of the child's own (an in-process
one cannot be handed to another process), and the proof is what only that child's call
service leaves: the record in its audit file, and the one call its upstream received."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import anyio
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.memory import create_client_server_memory_streams

from gateway import __version__
from gateway.audit import arguments_digest
from gateway.auth import Credential
from gateway.calls import ToolService
from gateway.front.caller import current_credential
from gateway.front.server import Front
from gateway.own_tools import OwnTool, Request, own_upstream
from gateway.principal import Principal
from gateway.settings import load_config
from gateway.upstreams.config import CALLER_META
from gateway.upstreams.requests import UpstreamRequests
from tests.conftest import ROOT
from tests.front.harness import (
    ACME,
    GLOBEX,
    KEYS,
    Gateway,
    gateway_yaml,
    key_entries,
    running_gateway,
)
from tests.helpers import gone, until

pytestmark = pytest.mark.anyio

OWN_TOOL = "gateway__record"  # the in-process recorder's tool
CHILD_TOOL = "rec__record"  # the recording upstream process's (tests.upstreams.servers.recorder)


def acme_granting(tool: str) -> str:
    """Acme, whose support tag (alice's) also grants `tool`, its `n` at most 9."""
    text = ACME.replace(
        'allowed_tools: ["echo__*"]', f'allowed_tools: ["echo__*", "{tool}"]'
    ).replace(
        "          echo__echo: {n: {max: 5}}",
        f"          echo__echo: {{n: {{max: 5}}}}\n          {tool}: {{n: {{max: 9}}}}",
    )
    assert text.count(tool) == 2
    return text


ALICE_PRINCIPAL = Principal("alice", "acme")
"""Who alice's key says she is (roles from the org file, none from the key)."""


class Recorder:
    """An upstream tool that keeps every call it receives, and who sent it: the frame
    that called the upstream connection's call_tool."""

    def __init__(self) -> None:
        self.received: list[Mapping[str, Any]] = []
        self.senders: list[str] = []
        self.callers: list[Principal | None] = []

    def tool(self) -> OwnTool:
        async def record(arguments: Mapping[str, Any], request: Request) -> types.CallToolResult:
            self.received.append(dict(arguments))
            self.callers.append(request.caller)
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
        {"acme": acme_granting(OWN_TOOL), "globex": GLOBEX},
        own=own_upstream({"record": recorder.tool()}),
    ) as running:
        yield running


def calls_audited(events: list[dict[str, Any]], tool: str = OWN_TOOL) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in e.items() if k not in ("at", "latency_ms")}
        for e in events
        if e["event"] == "tool_call" and e["tool"] == tool
    ]


async def make_calls(client: Client, tool: str = OWN_TOOL) -> list[tuple[bool, str]]:
    """The call and a refused one (out of scope: a tool error), as the client saw them."""
    answers = []
    for arguments in ({"n": 3}, {"n": 50}):
        result = await client.call_tool(tool, arguments)
        block = result.content[0]
        assert isinstance(block, types.TextContent)
        answers.append((bool(result.is_error), block.text))
    return answers


def expected_answers(tool: str = OWN_TOOL) -> list[tuple[bool, str]]:
    return [
        (False, "recorded {'n': 3}"),
        (True, f"{tool}: not permitted: n 50 exceeds max 9 set by tag support"),
    ]


EXPECTED_ANSWERS = expected_answers()


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
    assert recorder.callers == [ALICE_PRINCIPAL]  # vouched for by the gateway
    assert events == EXPECTED_AUDIT, door


def expected_audit(tool: str = OWN_TOOL) -> list[dict[str, Any]]:
    """The records of make_calls at every door. `ended` is the call service's word on how
    an admitted call ended: no door writes it."""
    return [
        {
            "event": "tool_call",
            "user": "alice",
            "org": "acme",
            "tool": tool,
            "decision": "allowed",
            "reason": "granted by tag support; arguments within its scope",
            "arguments_sha256": arguments_digest({"n": 3}),
            "ended": "ok",
        },
        {
            "event": "tool_call",
            "user": "alice",
            "org": "acme",
            "tool": tool,
            "decision": "out_of_scope",
            "reason": "n 50 exceeds max 9 set by tag support",
            "arguments_sha256": arguments_digest({"n": 50}),
        },
    ]


EXPECTED_AUDIT = expected_audit()


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
    assert recorder.callers == [ALICE_PRINCIPAL]  # vouched for by the gateway
    assert events == EXPECTED_AUDIT


def child_config(directory: Path, received: Path) -> Path:
    """A config for `gateway stdio` with one upstream, `rec`: the recording upstream
    process, keeping its record in `received`. The audit log is the config's own
    (`<data_dir>/audit.jsonl`), as an installed gateway's is."""
    orgs = directory / "orgs"
    orgs.mkdir()
    for org, text in {"acme": acme_granting(CHILD_TOOL), "globex": GLOBEX}.items():
        (orgs / f"{org}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    path = directory / "gateway.yaml"
    args = ["-m", "tests.upstreams.servers.recorder", str(received)]
    path.write_text(
        "tags: {dir: orgs, watch: false}\n"
        f"auth:\n  api_keys:\n{key_entries()}"
        "upstreams:\n"
        "  rec:\n"
        "    transport: stdio\n"
        f"    command: {json.dumps(sys.executable)}\n"
        f"    args: {json.dumps(args)}\n"
        f"    cwd: {json.dumps(str(ROOT))}\n"
        f"    env: {{PYTHONPATH: {json.dumps(str(ROOT))}}}\n",
        encoding="utf-8",
    )
    return path


def lines_of(path: Path) -> list[dict[str, Any]]:
    """The whole JSON lines written to `path` so far (a line being written is left out)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n")[:-1]]


async def test_the_gateway_stdio_command_reaches_it_the_same_way(tmp_path: Path) -> None:
    """The real `gateway stdio`, a child process with its own runtime, serving the SDK's
    stdio client: the same answers and the same audit records as every door above (for
    its own upstream's tool), the call received once by that upstream, from that child."""
    received = tmp_path / "received.jsonl"
    config = child_config(tmp_path, received)
    command = ["-m", "gateway.cli", "stdio", "--config", str(config), "--api-key", KEYS["alice"]]
    launch = StdioServerParameters(
        command=sys.executable, args=command, cwd=str(ROOT), env={"PYTHONPATH": str(ROOT)}
    )
    audit = load_config(config).audit_path  # the child's audit log

    def upstreams() -> list[int]:
        return [line["started"] for line in lines_of(received) if "started" in line]

    try:
        with anyio.fail_after(90):  # the SDK client's shutdown of the child is bounded too
            async with Client(launch) as client:
                assert await make_calls(client, CHILD_TOOL) == expected_answers(CHILD_TOOL)
                # The upstream wrote its record before answering; the child's audit batch
                # is written within its BATCH_DELAY.
                await until(lambda: len(calls_audited(lines_of(audit), CHILD_TOOL)) >= 2, 30)
                calls = [line for line in lines_of(received) if "arguments" in line]
                gateway = calls[0]["parent"]
                # Who called the upstream: the gateway stdio process of this config.
                cmdline = await anyio.Path(f"/proc/{gateway}/cmdline").read_bytes()
                assert cmdline.decode().split("\0")[1 : len(command) + 1] == command
            await until(lambda: gone(gateway), 20)
            await until(lambda: all(gone(pid) for pid in upstreams()), 20)
    finally:
        for pid in upstreams():  # the child's child, should the child have been killed
            if not gone(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    assert calls == [{"arguments": {"n": 3}, "parent": gateway}]
    assert len(upstreams()) == 1
    assert calls_audited(lines_of(audit), CHILD_TOOL) == expected_audit(CHILD_TOOL)


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


@pytest.mark.parametrize("direct", [True, False], ids=["gateway-door", "sdk-door"])
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_caller_cannot_say_who_it_is_to_the_gateways_own_tools(
    tmp_path: Path, recorder: Recorder, direct: bool, mode: str
) -> None:
    """The caller the own tools act as is the one the gateway authenticated: a request's
    own `_meta` claiming another is not passed on."""
    forged = {CALLER_META: {"user": "mallory", "org": "acme", "roles": ["admin"]}}
    async with (
        gateway(tmp_path, recorder, direct) as running,
        running.client("alice", mode) as alice,
    ):
        result = await alice.call_tool(OWN_TOOL, {"n": 3}, meta=cast(Any, forged))
    assert not result.is_error
    assert recorder.callers == [ALICE_PRINCIPAL]
