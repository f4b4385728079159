"""A hostile upstream (tests/upstreams/servers/hostile.py): tool definitions aimed at the
gateway cost only themselves, never the upstream's other tools, another caller, the event
loop or a request to anywhere; and a scope checks the value the upstream will use."""

from __future__ import annotations

import json
import logging
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import mcp_types as types
import pytest

from gateway.calls import ToolCall, ToolService
from gateway.errors import InvalidArguments, PermissionDenied
from gateway.principal import Principal
from gateway.tags.loader import tagset_from_texts
from gateway.tags.resolve import resolve
from gateway.upstreams import guard
from gateway.upstreams.config import StdioUpstream
from gateway.upstreams.pool import Pool
from tests.conftest import ROOT
from tests.upstreams.calling import settle

pytestmark = pytest.mark.anyio

ACME = """
users:
  alice: {roles: [agent]}
tags:
  - tag: tool_hostile
    kind: tool
    payload:
      config:
        assigned_roles: [agent]
        allowed_tools: ["h__*"]
        scopes:
          h__refund:
            amount: {max: 100}
            currency: {enum: [USD]}
            payment.method: {enum: [card, wire]}
            note: {max_length: 10, optional: true}
          h__plain:
            limit: {max: 5}
"""
ALICE = resolve(tagset_from_texts({"acme.yaml": ACME}), Principal("alice", "acme"))


def hostile(*args: str) -> StdioUpstream:
    return StdioUpstream.model_validate(
        {
            "transport": "stdio",
            "command": sys.executable,
            "args": ["-m", "tests.upstreams.servers.hostile", *args],
            "cwd": str(ROOT),
            "env": {"PYTHONPATH": str(ROOT)},
            "prefix": "h__",
            "call_timeout": 30,
        },
        strict=False,
    )


class Listener:
    """A loopback TCP port that counts the connections made to it."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        self.socket.setblocking(False)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}/schema.json"

    def connections(self) -> int:
        count = 0
        for _ in range(100):
            try:
                accepted, _ = self.socket.accept()
            except BlockingIOError:
                return count
            accepted.close()
            count += 1
        return count


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    found = Listener()
    try:
        yield found
    finally:
        found.socket.close()


@pytest.fixture
async def executor(listener: Listener) -> AsyncIterator[ToolService]:
    pool = Pool({"hostile": hostile("--ref-url", listener.url)})
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(pool.run)
        with anyio.fail_after(20):
            await pool.settled()
        yield ToolService(pool)
        tasks.cancel_scope.cancel()


async def settle_call(service: ToolService, call: ToolCall) -> object:
    return settle(await service.call(ALICE, call))


def structured(result: types.CallToolResult | types.InputRequiredResult | None) -> Any:
    assert isinstance(result, types.CallToolResult)
    return result.structured_content


async def test_unusable_tools_are_left_out_with_a_reason_and_the_rest_kept(
    executor: ToolService,
) -> None:
    catalog = executor.pool.catalog
    assert executor.pool.statuses()["hostile"].state.value == "ready"
    assert sorted(catalog.tools) == ["h__backtracks", "h__deep", "h__plain", "h__refund", "h__twin"]
    problems = "\n".join(catalog.problems)
    for expected in (
        "tool 'fetches' left out: its inputSchema refers outside itself",
        "tool 'loops' left out: its inputSchema refers to itself in a loop",
        "tool 'null_schema' left out: its inputSchema is null",
        "tool 'no_schema' left out: it has no inputSchema",
        "tool 'list_schema' left out: its inputSchema is an array",
        "tool 'broken_schema' left out: its inputSchema is not a valid JSON Schema",
        "tool 'twin' left out once: the upstream lists two tools of that name",
    ):
        assert expected in problems, problems
    assert all(problem.startswith("upstream 'hostile': ") for problem in catalog.problems)
    assert not catalog.clashes  # one upstream's own mistake stops nothing
    assert catalog.tools["h__twin"].tool.description == "first"


async def test_no_schema_makes_the_gateway_fetch_anything(
    executor: ToolService, listener: Listener
) -> None:
    settle(await executor.call(ALICE, ToolCall("h__plain", {"limit": 1})))
    assert "h__fetches" not in executor.pool.catalog.tools
    assert listener.connections() == 0


async def test_a_backtracking_pattern_is_matched_in_linear_time(executor: ToolService) -> None:
    # Python's re takes minutes on this; RE2 answers at once. A worker thread keeps the
    # old behaviour from blocking the test's own clock.
    crafted = {"a": "a" * 40 + "!"}
    with pytest.raises(InvalidArguments, match="does not match"), anyio.fail_after(20):
        await anyio.to_thread.run_sync(
            lambda: anyio.from_thread.run(
                lambda: settle_call(executor, ToolCall("h__backtracks", crafted))
            ),
            abandon_on_cancel=True,
        )
    outcome = settle(await executor.call(ALICE, ToolCall("h__backtracks", {"a": "aaa"})))
    assert structured(outcome) == {"a": "aaa"}


async def test_a_result_too_deep_to_parse_fails_at_once(executor: ToolService) -> None:
    with anyio.fail_after(10):  # call_timeout is 30
        with pytest.raises(Exception, match="could not be read"):
            settle(await executor.call(ALICE, ToolCall("h__deep", {})))
        outcome = settle(await executor.call(ALICE, ToolCall("h__plain", {"limit": 2})))
    assert structured(outcome) == {"limit": 2}


async def test_a_scope_checks_the_default_the_upstream_would_use(executor: ToolService) -> None:
    # amount defaults to 1000 in the tool's schema: leaving it out must not escape max 100.
    with pytest.raises(PermissionDenied, match="amount 1000 exceeds max 100"):
        settle(await executor.call(ALICE, ToolCall("h__refund", {"payment": {}})))
    # What was checked is what is sent: the declared defaults travel with the call.
    refund = ToolCall("h__refund", {"amount": 5, "payment": {}})
    outcome = settle(await executor.call(ALICE, refund))
    assert structured(outcome) == {
        "amount": 5,
        "currency": "USD",
        "payment": {"method": "wire"},
    }
    # No default declared (limit): absent escapes nothing only where the tag says so.
    with pytest.raises(PermissionDenied, match="limit is missing and the tool declares no"):
        settle(await executor.call(ALICE, ToolCall("h__plain", {})))


async def test_junk_on_stdout_is_one_short_line_at_a_time(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An interval longer than any test: exactly one report, however slow the machine.
    monkeypatch.setattr(guard, "JUNK_LOG_INTERVAL", 3600.0)
    pool = Pool({"hostile": hostile("junk")})
    caplog.set_level(logging.DEBUG)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(pool.run)
        with anyio.fail_after(20):
            await pool.settled()
        executor = ToolService(pool)
        for limit in range(5):
            outcome = settle(await executor.call(ALICE, ToolCall("h__plain", {"limit": limit})))
            assert structured(outcome) == {"limit": limit}
        tasks.cancel_scope.cancel()
    junk = [r for r in caplog.records if "not JSON-RPC" in r.getMessage()]
    assert len(junk) == 1, [
        r.getMessage() for r in junk
    ]  # 7 junk lines or more came: the rest wait for the interval
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in junk)
    assert not any("Failed to parse JSONRPC" in r.getMessage() for r in caplog.records)
    assert all(r.exc_info is None for r in caplog.records if r.name.startswith("mcp.client"))


def test_the_hostile_server_lists_what_the_tests_expect() -> None:
    # Guards the test itself: the hostile definitions are really on the wire.
    from tests.upstreams.servers import hostile as server

    names = [tool["name"] for tool in server.tools()]
    assert names.count("twin") == 2
    assert json.dumps(server.tools()).count('"inputSchema": null') == 1
