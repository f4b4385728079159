"""Calls over a live upstream: progress and log relay, cancellation, retries only where a
tool is safe to repeat, the degraded status, and resources and prompts through the pool."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from gateway.breaker import Breaker
from gateway.errors import ConnectionLost, UpstreamError
from gateway.upstreams.config import HttpUpstream, StdioUpstream
from gateway.upstreams.connection import UpstreamConnection
from gateway.upstreams.pool import Pool
from gateway.upstreams.sendable import Unsendable
from gateway.upstreams.status import State
from tests.helpers import until
from tests.upstreams.calling import call
from tests.upstreams.helpers import ECHO, http_echo, running, stdio, text

pytestmark = pytest.mark.anyio


async def test_progress_and_logs_reach_the_callers_callbacks() -> None:
    reports: list[tuple[float, float | None, str | None]] = []
    logs: list[types.LoggingMessageNotificationParams] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reports.append((progress, total, message))

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async with running(UpstreamConnection("echo", stdio())) as up:
        with anyio.fail_after(15):
            await up.wait_ready()
        result = await up.call_tool(
            "sleep", {"seconds": 0.3}, on_progress=on_progress, on_log=on_log
        )
        assert text(result) == "slept"
        assert reports == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]
        assert [(log.level, log.logger, log.data) for log in logs] == [
            ("info", "sleep", {"step": 1}),
            ("info", "sleep", {"step": 2}),
            ("info", "sleep", {"step": 3}),
        ]


async def test_logs_are_not_handed_to_one_of_several_callers() -> None:
    """Two calls in flight: a log message cannot be told apart, so neither caller gets it."""
    logs: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async with running(UpstreamConnection("echo", stdio())) as up:
        with anyio.fail_after(15):
            await up.wait_ready()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(lambda: up.call_tool("sleep", {"seconds": 0.3}, on_log=on_log))
            tasks.start_soon(lambda: up.call_tool("sleep", {"seconds": 0.5}))
        assert logs == []


async def test_a_progress_stream_does_not_lift_the_hard_cap() -> None:
    async with running(UpstreamConnection("echo", stdio(call_timeout=0.5))) as up:
        with anyio.fail_after(15):
            await up.wait_ready()
        ticks: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            ticks.append(progress)

        with pytest.raises(UpstreamError, match=r"did not answer within 0\.5 s"):
            await up.call_tool("sleep", {"seconds": 5}, on_progress=on_progress)
        assert ticks  # progress kept coming, and the cap still held


async def test_cancelling_a_call_cancels_it_upstream() -> None:
    async with running(UpstreamConnection("echo", stdio())) as up:
        with anyio.fail_after(15):
            await up.wait_ready()
        assert text(await up.call_tool("cancelled", {})) == "0"
        with anyio.move_on_after(0.3):
            await up.call_tool("sleep", {"seconds": 10})
        await until(lambda: up.status.state is State.READY)
        for _ in range(50):  # the notification travels on its own; give it a moment
            if text(await up.call_tool("cancelled", {})) == "1":
                break
            await anyio.sleep(0.02)
        assert text(await up.call_tool("cancelled", {})) == "1"


async def test_a_call_safe_to_repeat_is_retried_after_a_lost_connection(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    async with running(UpstreamConnection("echo", stdio())) as up:
        with anyio.fail_after(15):
            await up.wait_ready()
        result = await up.call_tool("lookup", {"journal": str(journal)}, retry=True)
        assert text(result) == "done"
        assert journal.read_text() == "lookup\nlookup\n"


async def test_a_call_not_safe_to_repeat_is_attempted_exactly_once(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    async with running(UpstreamConnection("echo", stdio())) as up:
        with anyio.fail_after(15):
            await up.wait_ready()
        with pytest.raises(ConnectionLost, match="the connection was lost during pay"):
            await up.call_tool("pay", {"journal": str(journal)})
        with anyio.fail_after(15):
            await up.wait_ready()
        await anyio.sleep(0.5)  # time a retry would have had
        assert journal.read_text() == "pay\n"


async def test_failing_calls_make_an_upstream_degraded_until_one_succeeds() -> None:
    breaker = Breaker(threshold=2, cooldown=0.3, max_cooldown=0.3)
    connection = UpstreamConnection("echo", stdio(call_timeout=0.3), breaker=breaker)
    async with running(connection) as up:
        with anyio.fail_after(15):
            await up.wait_ready()
        before = time.time()
        with pytest.raises(UpstreamError):
            await up.call_tool("sleep", {"seconds": 5})
        status = up.status
        assert status.state is State.DEGRADED
        assert status.error == "sleep on upstream echo did not answer within 0.3 s"
        assert status.failures == 1
        assert status.since >= before
        with pytest.raises(UpstreamError):
            await up.call_tool("sleep", {"seconds": 5})
        assert up.status.since == status.since  # degraded since the first failure
        assert up.status.failures == 2
        await anyio.sleep(0.35)
        assert text(await up.call_tool("echo", {})) == "[]"
        assert up.status.state is State.READY


async def test_resources_and_prompts_through_the_pool() -> None:
    pool = Pool({"one": stdio(), "two": stdio(prefix="two.")})
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(pool.run)
        with anyio.fail_after(20):
            await pool.settled()
        catalog = pool.catalog
        assert list(catalog.prompts) == ["one__greet", "two.greet"]
        # Both list echo://static, and both have the same template: neither is guessed.
        assert catalog.resources == {}
        with pytest.raises(UpstreamError, match="no upstream offers a resource"):
            await pool.read_resource("echo://items/7")
        prompt = await pool.get_prompt("two.greet", {"name": "Ada"})
        content = prompt.messages[0].content
        assert isinstance(content, types.TextContent)
        assert content.text == "Hello Ada"
        # A resource announced by one upstream is routed to it within a second.
        await call(pool, "two.mutate", {"resource": "echo://extra/1"})
        await until(lambda: "echo://extra/1" in pool.catalog.resources, 1)
        read = await pool.read_resource("echo://extra/1")
        block = read.contents[0]
        assert isinstance(block, types.TextResourceContents)
        assert block.text == "contents of echo://extra/1"
        assert pool.catalog.resources["echo://extra/1"].upstream == "two"
        with pytest.raises(UpstreamError, match="no upstream offers a prompt named 'greet'"):
            await pool.get_prompt("greet", {})
        tasks.cancel_scope.cancel()


async def test_a_resource_template_routes_reads_to_its_upstream() -> None:
    pool = Pool({"one": stdio(), "off": stdio(enabled=False)})
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(pool.run)
        with anyio.fail_after(20):
            await pool.settled()
        read = await pool.read_resource("echo://items/7")
        block = read.contents[0]
        assert isinstance(block, types.TextResourceContents)
        assert block.text == "contents of echo://items/7"
        assert list(pool.catalog.resources) == ["echo://static"]
        tasks.cancel_scope.cancel()


UNSENDABLE: list[dict[str, Any]] = [
    {"text": "\ud800"},  # a lone surrogate: UTF-8 cannot encode it
    {"\udc00": "in a key"},
    {"n": float("nan")},
    {"deep": [{"n": float("-inf")}]},
    {"thing": object()},  # an in-process caller's mistake
]


@pytest.mark.parametrize("leg", ["stdio", "stdio-handshake", "http"])
async def test_request_content_that_cannot_be_sent_counts_nothing(leg: str) -> None:
    """A request the gateway cannot write is the caller's invalid input (-32602), refused
    before it is sent: the SDK client's writer failed on a lone surrogate in a task of
    the shared session, which ended it for every caller and counted as the upstream's
    failure, so that a few such calls opened the breaker. Here more calls than the
    breaker's threshold leave the upstream ready, on the same process or session."""
    with contextlib.ExitStack() as stack:
        if leg == "http":  # a 2026-07-28 upstream: calls are hand-built exchanges
            url = stack.enter_context(http_echo())
            config: StdioUpstream | HttpUpstream = HttpUpstream.model_validate(
                {"transport": "streamable_http", "url": url}
            )
        else:  # the SDK client, on the gateway's own session (or a caller's own)
            config = stdio(args=[*ECHO, leg])
        async with running(UpstreamConnection("echo", config)) as up:
            with anyio.fail_after(15):
                await up.wait_ready()
            pid = text(await up.call_tool("pid", {}))
            for attempt in range(2 * up.breaker.threshold):
                arguments = UNSENDABLE[attempt % len(UNSENDABLE)]
                with pytest.raises(Unsendable) as caught:
                    await up.call_tool("echo", arguments, owner=attempt % 2)
                assert caught.value.error.code == types.INVALID_PARAMS
                assert "echo on upstream echo not sent: arguments." in str(caught.value)
            with pytest.raises(Unsendable, match="not valid Unicode"):
                await up.read_resource("echo://items/\ud800")
            with pytest.raises(Unsendable, match=r"arguments\.name: text that is not valid"):
                await up.get_prompt("greet", {"name": "x\ud800"})
            reference = types.PromptReference(type="ref/prompt", name="greet")
            with pytest.raises(Unsendable, match=r"argument\.value"):
                await up.complete(reference, {"name": "name", "value": "\udfff"}, None)
            with pytest.raises(Unsendable, match=r"uri: text that is not valid"):
                await up.subscriptions.add("echo://items/\ud800")
            assert up.breaker.failures == 0
            assert up.status.state is State.READY
            assert text(await up.call_tool("pid", {})) == pid
            assert text(await up.call_tool("echo", {"text": "\U0001f600"})) == "[('text', '😀')]"


@pytest.mark.parametrize("leg", ["stdio", "stdio-handshake", "http"])
async def test_an_error_answer_with_the_sdks_own_codes_is_the_upstreams_answer(
    leg: str,
) -> None:
    """-32000 opens JSON-RPC's range of servers' own errors (many servers answer with it),
    and the SDK happens to use it for a closed connection, -32001 for a timeout. An
    upstream's error answer with either was taken for the SDK's own: a lost connection
    (the upstream's process restarted, for every caller) or a timeout, each counted by
    the breaker, so that a few such answers shut the upstream off. It is the upstream's
    answer, passed on, like any other code."""
    with contextlib.ExitStack() as stack:
        if leg == "http":
            url = stack.enter_context(http_echo())
            config: StdioUpstream | HttpUpstream = HttpUpstream.model_validate(
                {"transport": "streamable_http", "url": url}
            )
        else:
            config = stdio(args=[*ECHO, leg])
        async with running(UpstreamConnection("echo", config)) as up:
            with anyio.fail_after(15):
                await up.wait_ready()
            pid = text(await up.call_tool("pid", {}))
            # With data and without; worded as a server would, and as the SDK words its
            # own (the gateway gives the SDK no timeout, so -32001 is never the SDK's).
            answers = [
                (types.CONNECTION_CLOSED, "rejected by echo", True),
                (types.CONNECTION_CLOSED, "rejected by echo", False),
                (types.CONNECTION_CLOSED, "Connection closed by peer", False),
                (types.REQUEST_TIMEOUT, "rejected by echo", False),
                (types.REQUEST_TIMEOUT, "Request 'tools/call' timed out", False),
            ]
            for attempt in range(2 * up.breaker.threshold):
                code, message, data = answers[attempt % len(answers)]
                with pytest.raises(MCPError) as caught:
                    await up.call_tool(
                        "reject", {"code": code, "message": message, "data": data}, retry=True
                    )
                assert (caught.value.error.code, caught.value.error.message) == (code, message)
            assert up.breaker.failures == 0
            assert up.status.state is State.READY
            assert text(await up.call_tool("pid", {})) == pid
