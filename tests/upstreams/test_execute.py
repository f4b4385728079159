"""execute(): permission, catalog and schema checks before anything reaches an upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import mcp_types as types
import pytest

from gateway.audit import AuditLog
from gateway.principal import Principal
from gateway.tags.loader import tagset_from_texts
from gateway.tags.resolve import resolve
from gateway.upstreams.execute import (
    Executor,
    InvalidArguments,
    MalformedArguments,
    Mode,
    PermissionDenied,
    ToolCall,
    UnknownTool,
)
from gateway.upstreams.pool import Pool
from gateway.upstreams.status import ConnectionLost
from tests.upstreams.helpers import stdio, text

pytestmark = pytest.mark.anyio

ACME = """
users:
  alice: {roles: [agent]}
tags:
  - tag: tool_echo
    kind: tool
    payload:
      config:
        assigned_roles: [agent]
        allowed_tools: ["echo__echo", "echo__sleep", "echo__pid", "echo__crash", "echo__gone",
                        "echo__lookup", "echo__pay"]
        denied_tools: ["echo__crash"]
        scopes:
          echo__echo: {n: {max: 5}}
"""
ALICE = resolve(tagset_from_texts({"acme.yaml": ACME}), Principal("alice", "acme"))


@pytest.fixture
async def executor() -> AsyncIterator[Executor]:
    pool = Pool({"echo": stdio(call_timeout=5)})
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(pool.run)
        with anyio.fail_after(20):
            await pool.settled()
        yield Executor(pool)
        tasks.cancel_scope.cancel()


async def pid(executor: Executor) -> str:
    outcome = await executor.execute(ALICE, ToolCall("echo__pid", {}))
    assert outcome.result is not None
    return text(outcome.result)


async def test_a_permitted_call_returns_the_upstream_result(executor: Executor) -> None:
    outcome = await executor.execute(ALICE, ToolCall("echo__echo", {"n": 3}))
    assert outcome.ok
    assert isinstance(outcome.result, types.CallToolResult)
    assert text(outcome.result) == "[('n', 3)]"
    assert outcome.result.structured_content == {"n": 3}
    assert outcome.result.is_error is False
    assert outcome.seconds > 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            ToolCall("echo__echo", {"n": 50}),
            "echo__echo: not permitted: n 50 exceeds max 5 set by tag tool_echo",
        ),
        (
            ToolCall("echo__crash", {}),
            "echo__crash: not permitted: echo__crash is denied by tag tool_echo",
        ),
        (ToolCall("echo__mutate", {}), "echo__mutate: not permitted: no applied tag grants"),
    ],
)
async def test_a_refused_call_never_reaches_the_upstream(
    executor: Executor, call: ToolCall, message: str
) -> None:
    before = await pid(executor)
    with pytest.raises(PermissionDenied) as caught:
        await executor.execute(ALICE, call)
    assert str(caught.value).startswith(message)
    assert await pid(executor) == before  # crash was not sent: the same child answers


async def test_arguments_are_checked_against_the_input_schema(executor: Executor) -> None:
    with pytest.raises(InvalidArguments) as caught:
        await executor.execute(ALICE, ToolCall("echo__sleep", {"seconds": "soon"}))
    assert str(caught.value) == (
        "echo__sleep: arguments do not fit its inputSchema: seconds: 'soon' is not of type 'number'"
    )


async def test_a_granted_tool_no_upstream_offers(executor: Executor) -> None:
    with pytest.raises(UnknownTool, match="echo__gone: no upstream offers this tool"):
        await executor.execute(ALICE, ToolCall("echo__gone", {}))


async def test_execute_many_keeps_order_and_reports_each_outcome(executor: Executor) -> None:
    calls = [
        ToolCall("echo__sleep", {"seconds": 0.2}),
        ToolCall("echo__echo", {"n": 1}),
        ToolCall("echo__crash", {}),
        ToolCall("echo__echo", {"n": 2}),
    ]
    for mode in (Mode.PARALLEL, Mode.SEQUENTIAL):
        outcomes = await executor.execute_many(ALICE, calls, mode=mode, max_concurrency=2)
        assert [o.call for o in outcomes] == calls
        assert [o.ok for o in outcomes] == [True, True, False, True]
        assert isinstance(outcomes[2].error, PermissionDenied)

    stopped = await executor.execute_many(ALICE, calls[1:], stop_on_error=True)
    assert [o.ok for o in stopped] == [True, False, False]
    assert str(stopped[2].error) == "echo__echo: not run: an earlier call failed"


async def test_only_tools_annotated_safe_to_repeat_are_retried(
    executor: Executor, tmp_path: Path
) -> None:
    lookup, pay = tmp_path / "lookup", tmp_path / "pay"
    outcome = await executor.execute(ALICE, ToolCall("echo__lookup", {"journal": str(lookup)}))
    assert outcome.result is not None
    assert text(outcome.result) == "done"
    assert lookup.read_text() == "lookup\nlookup\n"
    with pytest.raises(ConnectionLost, match="closed the connection during pay"):
        await executor.execute(ALICE, ToolCall("echo__pay", {"journal": str(pay)}))
    with anyio.fail_after(15):
        await executor.pool.connections["echo"].wait_ready()
    assert await pid(executor)  # the upstream is back, and nothing retried the payment
    assert pay.read_text() == "pay\n"


async def test_arguments_that_cannot_be_sent_are_refused_before_anything_else(
    executor: Executor, tmp_path: Path
) -> None:
    """Whichever door a call came through (`gateway stdio`'s parser lets NaN through, an
    in-process caller may pass anything): refused before the permission check, so the
    answer says nothing of the tool, and audited as invalid arguments."""
    executor = Executor(executor.pool, AuditLog(tmp_path / "audit.jsonl"))
    before = await pid(executor)
    refused = 0
    for arguments in ({"n": 1, "t": "\ud800"}, {"\udc00": 1}, {"n": float("nan")}):
        for tool in ("echo__echo", "echo__crash", "echo__nothing"):
            with pytest.raises(MalformedArguments, match="the arguments cannot be sent"):
                await executor.execute(ALICE, ToolCall(tool, arguments))
            refused += 1
    events = [e for e in executor.audit.read() if e["event"] == "tool_call"][-refused:]
    assert {e["decision"] for e in events} == {"invalid_arguments"}
    assert "arguments.t: text that is not valid Unicode" in str(events[0]["reason"])
    assert await pid(executor) == before  # the upstream's process, untouched
