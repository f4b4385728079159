"""Flows as MCP tools, end to end: `gateway serve` as a child process in front of the ops
upstream (servers/ops.py, whose `tally` counts the calls it got), reached by real clients,
the MCP Inspector's CLI and the official SDK's streamable HTTP client. Every flow tag is
the gateway's own tool `gateway__flow__<name>`, listed only to the callers it applies
to, with the caller's own org's inputs as its input schema; each step's tool is checked
as the caller when the flow runs it."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
import yaml
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import DEMO_CONFIG, ROOT
from tests.front.mcp_clients import inspector
from tests.helpers import clean_env, serving

pytestmark = pytest.mark.anyio

ORGS = {"alice": "acme", "bob": "acme", "carol": "acme", "dora": "acme"}
ORGS |= {"gina": "globex", "ivan": "initech"}
KEYS = {user: f"flow-tools-key-{user}-0001" for user in ORGS}

SUM_INPUTS: dict[str, Any] = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
    "additionalProperties": False,
}
ACME_REPORT: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
    "additionalProperties": False,
}
GLOBEX_REPORT: dict[str, Any] = {
    "type": "object",
    "properties": {"n": {"type": "integer"}},
    "required": ["n"],
    "additionalProperties": False,
}


def role(name: str, allowed: list[str] | None = None, denied: list[str] | None = None) -> Any:
    config: dict[str, Any] = {"assigned_roles": [name], "allowed_tools": allowed or []}
    if denied:
        config["denied_tools"] = denied
    return {"tag": name, "kind": "role", "payload": {"config": config}}


def flow(name: str, users: list[str], content: dict[str, Any]) -> Any:
    return {
        "tag": name,
        "kind": "flow",
        "payload": {
            "meta": {"title": name},
            "config": {"assigned_users": users},
            "content": content,
        },
    }


OPERATOR = role("agent", ["ops__add", "ops__echo", "ops__tally"])
SUM = flow(
    "flow_sum",
    ["alice", "carol", "dora"],
    {
        "description": "Adds a and b, then says the sum.",
        "inputs": SUM_INPUTS,
        "steps": [
            {"id": "add", "tool": "ops__add", "args": {"a": "{{ input.a }}", "b": "{{ input.b }}"}},
            {"id": "say", "tool": "ops__echo", "args": {"sum": "{{ steps.add.structured.sum }}"}},
        ],
        "output": "sum {{ steps.add.structured.sum }}",
    },
)
ACME_REPORT_FLOW = flow(
    "flow_report",
    ["alice"],
    {
        "inputs": ACME_REPORT,
        "steps": [{"id": "say", "tool": "ops__echo", "args": {"text": "{{ input.text }}"}}],
        "output": "acme reports {{ input.text }}",
    },
)
GLOBEX_REPORT_FLOW = flow(
    "flow_report",
    ["gina"],
    {
        "inputs": GLOBEX_REPORT,
        "steps": [{"id": "inc", "tool": "ops__add", "args": {"a": "{{ input.n }}", "b": 1}}],
        "output": "globex counts {{ steps.inc.structured.sum }}",
    },
)
DOUBLE = flow(
    "flow_double",
    ["alice"],
    {
        "inputs": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        "steps": [{"id": "add", "tool": "ops__add", "args": {"a": "{{ input.n }}", "b": 2}}],
        "output": "{{ steps.add.structured.sum }}",
    },
)


def acme(*more: Any) -> str:
    """alice and bob are agents (bob has no flow); carol may add but not echo; dora is an
    agent whose `shy` role denies every flow tool."""
    users = {
        "alice": {"roles": ["agent"]},
        "bob": {"roles": ["agent"]},
        "carol": {"roles": ["adder"]},
        "dora": {"roles": ["agent", "shy"]},
    }
    tags = [
        OPERATOR,
        role("adder", ["ops__add", "ops__tally"]),
        role("shy", denied=["gateway__flow__*"]),
        SUM,
        ACME_REPORT_FLOW,
        *more,
    ]
    return yaml.safe_dump({"users": users, "tags": tags}, sort_keys=False)


GLOBEX = yaml.safe_dump(
    {"users": {"gina": {"roles": ["agent"]}}, "tags": [OPERATOR, GLOBEX_REPORT_FLOW]},
    sort_keys=False,
)
INITECH = yaml.safe_dump(
    {"users": {"ivan": {"roles": ["admin"]}}, "tags": [role("admin", ["gateway__*"])]},
    sort_keys=False,
)


def write_config(directory: Path) -> Path:
    orgs = directory / "orgs"
    orgs.mkdir()
    for org, text in (("acme", acme()), ("globex", GLOBEX), ("initech", INITECH)):
        (orgs / f"{org}.yaml").write_text(text, encoding="utf-8")
    upstream = {
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-m", "tests.flows.servers.ops"],
        "cwd": str(ROOT),
        "env": {"PYTHONPATH": str(ROOT)},
        "call_timeout": 20,
    }
    keys = [{"user": user, "org": ORGS[user], "key": key} for user, key in KEYS.items()]
    config = {
        "data_dir": str(directory / "data"),
        "auth": {"dev": True, "api_keys": keys},
        "tags": {"dir": "orgs", "watch": True},
        "state": {"url": "memory://"},
        "upstreams": {"ops": upstream},
    }
    path = directory / "gateway.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def serve(path: Path) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)]


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One gateway for the tests that change nothing in its config (each reads the tally
    before and after, so the calls of the others do not count)."""
    path = write_config(tmp_path_factory.mktemp("flow-tools"))
    with serving(serve(path), clean_env(), group=True) as (proc, port):
        assert proc.poll() is None, proc.communicate(timeout=10)
        yield port


@asynccontextmanager
async def connected(port: int, user: str, mode: str = "auto") -> AsyncIterator[Client]:
    url = f"http://127.0.0.1:{port}/mcp"
    async with (
        httpx2.AsyncClient(headers={"X-API-Key": KEYS[user]}, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


async def listed(client: Client) -> dict[str, types.Tool]:
    with anyio.fail_after(20):
        return {tool.name: tool for tool in (await client.list_tools()).tools}


async def tally(port: int) -> dict[str, int]:
    """The calls the ops upstream received, by tool (tally's own not counted)."""
    async with connected(port, "alice") as client:
        with anyio.fail_after(20):
            result = await client.call_tool("ops__tally", {})
    assert result.structured_content is not None, result
    return dict(result.structured_content["calls"])


def text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent), result
    return block.text


async def test_the_inspector_lists_and_calls_the_demos_refund_flow() -> None:
    with serving(serve(DEMO_CONFIG), clean_env(), group=True) as (proc, port):
        assert proc.poll() is None, proc.communicate(timeout=10)

        async def inspect(key: str, *args: str) -> tuple[int, str]:
            """Its exit code and stdout (stderr has its schema warnings, on failure too)."""
            url = f"http://127.0.0.1:{port}/mcp"
            command = [*inspector(), url, "--transport", "http", "--header", f"X-API-Key: {key}"]
            with anyio.fail_after(60):
                done = await anyio.run_process([*command, *args], check=False, cwd=ROOT)
            out = done.stdout.decode()
            return done.returncode, out if done.returncode == 0 else out + done.stderr.decode()

        code, out = await inspect("demo-key-alice-0001", "--method", "tools/list")
        assert code == 0, out
        tools = {tool["name"]: tool for tool in json.loads(out)["tools"]}
        assert tools["gateway__flow__refund"]["inputSchema"]["required"] == ["order_id", "amount"]
        code, out = await inspect("demo-key-bob-0002", "--method", "tools/list")
        assert code == 0, out
        assert "gateway__flow__refund" not in [t["name"] for t in json.loads(out)["tools"]]
        code, out = await inspect(
            "demo-key-alice-0001", "--method", "tools/call", "--tool-name",
            "gateway__flow__refund", "--tool-arg", "order_id=ORD-100001", "--tool-arg", "amount=10",
        )  # fmt: skip
    assert code == 0, out
    result = json.loads(out)
    said = "Refunded 10.0 USD for ORD-100001"
    assert result["content"] == [{"type": "text", "text": said}]
    assert result["structuredContent"]["status"] == "completed"
    assert result["structuredContent"]["output"] == said
    assert result["structuredContent"]["session_id"].startswith("s_")


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_sdk_client_gets_a_progress_report_per_step_before_the_result(
    port: int, mode: str
) -> None:
    before = await tally(port)
    seen: list[tuple[float, str]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message or ""))

    async with connected(port, "alice", mode) as client:
        tool = (await listed(client))["gateway__flow__sum"]
        assert tool.input_schema == SUM_INPUTS
        assert tool.description is not None
        assert tool.description.startswith("Adds a and b, then says the sum.")
        with anyio.fail_after(30):
            result = await client.call_tool(
                "gateway__flow__sum", {"a": 2, "b": 3}, progress_callback=on_progress
            )
        answered = len(seen)
        await anyio.sleep(0.5)  # a report sent after the result would arrive by now
    assert not result.is_error, result
    assert text(result) == "sum 5"
    summary = result.structured_content
    assert summary is not None
    assert (summary["status"], summary["output"]) == ("completed", "sum 5")
    messages = [message for _, message in seen]
    assert len(seen) == answered, f"reports after the result: {messages[answered:]}"
    assert "flow flow_sum: 2 steps" in messages
    for step in ("add", "say"):
        assert messages.count(f"step {step}: running") == 1, messages
        assert messages.count(f"step {step}: completed") == 1, messages
    assert messages.index("step add: completed") < messages.index("step say: running")
    assert messages[-1] == "session completed", messages
    assert [progress for progress, _ in seen] == sorted({progress for progress, _ in seen})
    after = await tally(port)
    assert (after["add"] - before.get("add", 0), after["echo"] - before.get("echo", 0)) == (1, 1)


async def test_a_caller_without_the_flow_tag_neither_sees_nor_runs_it(port: int) -> None:
    before = await tally(port)
    async with connected(port, "bob") as client:
        tools = await listed(client)
        assert "ops__add" in tools  # bob is an agent, only the flow is not his
        assert not [name for name in tools if name.startswith("gateway__flow__")]
        with (
            anyio.fail_after(20),
            pytest.raises(MCPError, match="Unknown tool: gateway__flow__sum"),
        ):
            await client.call_tool("gateway__flow__sum", {"a": 2, "b": 3})
    assert await tally(port) == before


async def test_a_step_whose_tool_the_caller_lacks_is_refused_after_the_steps_before(
    port: int,
) -> None:
    before = await tally(port)
    async with connected(port, "carol") as client:
        tools = await listed(client)
        assert "gateway__flow__sum" in tools
        assert "ops__echo" not in tools
        with anyio.fail_after(30):
            result = await client.call_tool("gateway__flow__sum", {"a": 2, "b": 3})
    assert result.is_error, result
    assert "step 'say' (ops__echo)" in text(result), text(result)
    assert result.structured_content is not None
    assert result.structured_content["status"] == "failed"
    after = await tally(port)
    assert after["add"] == before.get("add", 0) + 1, "the step before ran"
    assert after.get("echo", 0) == before.get("echo", 0), "the refused tool was never called"


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"a": "two", "b": 3}, "a: 'two' is not of type 'integer'"),
        ({"a": 2}, "'b' is a required property"),
        ({"a": 2, "b": 3, "c": 4}, "'c' was unexpected"),
    ],
)
async def test_an_input_that_does_not_fit_the_flows_inputs_is_refused_before_any_call(
    port: int, arguments: dict[str, Any], says: str
) -> None:
    before = await tally(port)
    async with connected(port, "alice") as client:
        with anyio.fail_after(20):
            result = await client.call_tool("gateway__flow__sum", arguments)
    assert result.is_error, result
    assert text(result).startswith("gateway__flow__sum: "), text(result)
    assert "do not fit its inputSchema" in text(result), text(result)
    assert says in text(result), text(result)
    assert await tally(port) == before


async def test_each_org_is_shown_and_held_to_its_own_flow_of_a_shared_name(port: int) -> None:
    before = await tally(port)
    outcomes = {}
    async with connected(port, "alice") as alice, connected(port, "gina") as gina:
        for client, schema in ((alice, ACME_REPORT), (gina, GLOBEX_REPORT)):
            tools = await listed(client)
            assert tools["gateway__flow__report"].input_schema == schema
        assert "gateway__flow__sum" not in await listed(gina)  # acme's alone
        with anyio.fail_after(60):
            outcomes["alice"] = await alice.call_tool("gateway__flow__report", {"text": "hi"})
            outcomes["gina"] = await gina.call_tool("gateway__flow__report", {"n": 41})
            outcomes["gina's with acme's input"] = await gina.call_tool(
                "gateway__flow__report", {"text": "hi"}
            )
            outcomes["alice's with globex's input"] = await alice.call_tool(
                "gateway__flow__report", {"n": 41}
            )
    assert text(outcomes["alice"]) == "acme reports hi", outcomes["alice"]
    assert text(outcomes["gina"]) == "globex counts 42", outcomes["gina"]
    for wrong in ("gina's with acme's input", "alice's with globex's input"):
        result = outcomes[wrong]
        assert result.is_error, (wrong, result)
        assert "does not fit" in text(result), (wrong, text(result))
    after = await tally(port)
    assert after["echo"] == before.get("echo", 0) + 1
    assert after["add"] == before.get("add", 0) + 1


async def test_denied_flow_tools_in_another_tag_hide_the_flow(port: int) -> None:
    before = await tally(port)
    async with connected(port, "dora") as client:
        tools = await listed(client)
        assert "ops__add" in tools
        assert not [name for name in tools if name.startswith("gateway__flow__")]
        with (
            anyio.fail_after(20),
            pytest.raises(MCPError, match="Unknown tool: gateway__flow__sum"),
        ):
            await client.call_tool("gateway__flow__sum", {"a": 2, "b": 3})
    assert await tally(port) == before


async def test_a_grant_of_every_own_tool_shows_no_other_orgs_flows(port: int) -> None:
    async with connected(port, "ivan") as client:
        tools = await listed(client)
    assert "gateway__ping" in tools  # the grant works for the gateway's own tools
    assert not [name for name in tools if name.startswith("gateway__flow__")], [
        (tool.name, tool.description) for name, tool in tools.items() if "flow" in name
    ]


async def test_a_tag_reload_adds_and_removes_flow_tools(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    org = tmp_path / "orgs" / "acme.yaml"

    async def names(client: Client) -> set[str]:
        return set(await listed(client))

    async def until_listed(client: Client, name: str, present: bool) -> None:
        with anyio.fail_after(15):
            for _ in range(150):
                if (name in await names(client)) is present:
                    return
                await anyio.sleep(0.1)
        raise AssertionError(f"{name} {'never listed' if present else 'still listed'}")

    with serving(serve(path), clean_env(), group=True) as (proc, port):
        assert proc.poll() is None, proc.communicate(timeout=10)
        async with connected(port, "alice") as alice, connected(port, "bob") as bob:
            assert "gateway__flow__double" not in await names(alice)
            org.write_text(acme(DOUBLE), encoding="utf-8")
            await until_listed(alice, "gateway__flow__double", True)
            with anyio.fail_after(30):
                result = await alice.call_tool("gateway__flow__double", {"n": 5})
            assert not result.is_error, result
            assert result.structured_content is not None
            assert result.structured_content["output"] == 7
            assert "gateway__flow__double" not in await names(bob)  # not one of its users
            # And one taken away goes.
            org.write_text(acme().replace("flow_sum", "flow_gone"), encoding="utf-8")
            await until_listed(alice, "gateway__flow__sum", False)
            listing = await names(alice)
            assert "gateway__flow__gone" in listing
            assert "gateway__flow__double" not in listing
        assert proc.poll() is None, "the gateway served throughout"
