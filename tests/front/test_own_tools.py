"""The gateway's own tools through /mcp: `gateway__ping`, served in process as an upstream
of the pool, is listed, refused, scoped and audited like any upstream's tool, and an
upstream passing a reserved name through cannot stand in for it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import httpx2
import mcp_types as types
import pytest
from mcp import MCPError

from gateway.own_tools import own_upstream
from tests.conftest import ROOT
from tests.front.harness import ACME, GLOBEX, Gateway, gateway_yaml, running_gateway
from tests.front.helpers import MODES, audit_events
from tests.upstreams.helpers import text

pytestmark = pytest.mark.anyio

# alice (support) is granted ping, with its message scoped; bob (viewer) is not.
ACME_PINGS = ACME.replace(
    'allowed_tools: ["echo__*"]', 'allowed_tools: ["echo__*", "gateway__ping", "*evil"]'
).replace(
    "          echo__echo: {n: {max: 5}}",
    "          echo__echo: {n: {max: 5}}\n          gateway__ping: {message: {max_length: 8}}",
)
assert ACME_PINGS.count("gateway__ping") == 2

IMPOSTOR = (
    "  impostor:\n"
    "    transport: stdio\n"
    f"    command: {sys.executable}\n"
    "    args: [-m, tests.upstreams.servers.impostor]\n"
    f"    cwd: {ROOT}\n"
    f"    env: {{PYTHONPATH: {ROOT}}}\n"
    '    prefix: ""\n'
)
"""Offers gateway__ping and gateway__evil under their own names (and `honest`)."""


@pytest.fixture(scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    async with running_gateway(
        tmp_path_factory.mktemp("own"),
        gateway_yaml() + IMPOSTOR,
        {"acme": ACME_PINGS, "globex": GLOBEX},
        own=own_upstream(),
    ) as running:
        yield running


@pytest.mark.parametrize("mode", MODES)
async def test_ping_is_listed_only_to_callers_granted_it(gateway: Gateway, mode: str) -> None:
    async with gateway.client("alice", mode) as alice:
        listed = {tool.name: tool for tool in (await alice.list_tools()).tools}
    async with gateway.client("bob", mode) as bob:
        bobs = [tool.name for tool in (await bob.list_tools()).tools]
    ping = listed["gateway__ping"]
    assert ping.annotations is not None
    assert (ping.annotations.read_only_hint, ping.annotations.idempotent_hint) == (True, True)
    assert [name for name in listed if "gateway__" in name or "evil" in name] == ["gateway__ping"]
    assert bobs == ["echo__pid", "tiny__echo"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_granted_caller_gets_the_gateways_pong(gateway: Gateway, mode: str) -> None:
    async with gateway.client("alice", mode) as alice:
        await alice.list_tools()
        plain = await alice.call_tool("gateway__ping", {})
        said = await alice.call_tool("gateway__ping", {"message": "hi"})
    assert (text(plain), plain.structured_content) == ("pong", {"pong": True, "message": ""})
    assert not plain.is_error
    assert text(said) == "pong: hi"  # never the impostor's answer


@pytest.mark.parametrize("mode", MODES)
async def test_a_caller_not_granted_ping_is_told_it_is_unknown(gateway: Gateway, mode: str) -> None:
    async with gateway.client("bob", mode) as bob:
        await bob.list_tools()
        answers = {}
        for name in ("gateway__ping", "nosuch__tool"):
            with pytest.raises(MCPError) as caught:
                await bob.call_tool(name, {})
            answers[name] = (caught.value.error.code, caught.value.error.message)
    assert answers == {
        name: (types.INVALID_PARAMS, f"Unknown tool: {name}")
        for name in ("gateway__ping", "nosuch__tool")
    }


async def test_ping_outside_its_scope_is_refused_with_the_reason(gateway: Gateway) -> None:
    async with gateway.client("alice") as alice:
        await alice.list_tools()
        result = await alice.call_tool("gateway__ping", {"message": "far too long"})
    assert result.is_error
    assert text(result) == (
        "gateway__ping: not permitted: message is 12 characters long, over max_length 8 set "
        "by tag support"
    )


async def test_the_impostors_reserved_names_are_left_out(gateway: Gateway) -> None:
    pool = gateway.app.state.runtime.pool
    assert pool.catalog.tools["gateway__ping"].upstream == "gateway"
    assert "gateway__evil" not in pool.catalog.tools
    assert pool.catalog.tools["honest"].upstream == "impostor"
    left_out = [p for p in pool.catalog.problems if p.startswith("upstream 'impostor'")]
    assert [p.split(":")[1].strip() for p in left_out] == [
        "tool 'gateway__ping' left out",
        "tool 'gateway__evil' left out",
    ]
    async with gateway.client("alice") as alice:
        await alice.list_tools()  # granted "*evil", but there is no such tool to list
        with pytest.raises(MCPError, match="Unknown tool: gateway__evil"):
            await alice.call_tool("gateway__evil", {})


async def test_calls_of_ping_are_audited_like_any_tools(gateway: Gateway) -> None:
    before = len(audit_events(gateway))
    async with gateway.client("alice") as alice:
        await alice.list_tools()
        await alice.call_tool("gateway__ping", {"message": "audit"})
        await alice.call_tool("gateway__ping", {"message": "much too long"})
    async with gateway.client("bob") as bob:
        await bob.list_tools()
        with pytest.raises(MCPError):
            await bob.call_tool("gateway__ping", {})
    calls = [e for e in audit_events(gateway)[before:] if e["event"] == "tool_call"]
    assert [(e["user"], e["tool"], e["decision"], e.get("ended")) for e in calls] == [
        ("alice", "gateway__ping", "allowed", "ok"),
        ("alice", "gateway__ping", "out_of_scope", None),
        ("bob", "gateway__ping", "not_granted", None),
    ]
    assert "audit" not in str(calls)  # arguments as a hash, as for every tool


async def test_the_own_upstream_reports_like_the_others(gateway: Gateway) -> None:
    pool = gateway.app.state.runtime.pool
    assert pool.connections["gateway"].config.transport == "inprocess"
    async with httpx2.AsyncClient(timeout=5) as http:
        health = (await http.get(gateway.url.removesuffix("/mcp") + "/health")).json()
    assert health["upstreams"] == {"ready": 4}  # echo, tiny, impostor and the gateway's own
