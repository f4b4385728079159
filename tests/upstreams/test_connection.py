"""One upstream connection against real MCP servers: stdio children and streamable HTTP."""

from __future__ import annotations

import time

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from gateway.breaker import Breaker
from gateway.errors import UpstreamError
from gateway.upstreams.config import HttpUpstream
from gateway.upstreams.connection import UpstreamConnection
from gateway.upstreams.status import State
from tests.helpers import gone, until
from tests.redis_server import free_port
from tests.upstreams.helpers import ECHO_TOOLS, http_echo, listening, running, stdio, text

pytestmark = pytest.mark.anyio


async def test_stdio_upstream_lists_and_calls() -> None:
    async with running(UpstreamConnection("echo", stdio())) as up:
        with anyio.fail_after(15):
            await up.wait_ready()
        assert up.status.state is State.READY
        assert [tool.name for tool in up.tools] == ECHO_TOOLS
        result = await up.call_tool("echo", {"b": 2, "a": 1})
        assert text(result) == "[('a', 1), ('b', 2)]"
        assert result.structured_content == {"b": 2, "a": 1}
        # Concurrent calls share the one session.
        results: list[str] = []

        async def call(n: int) -> None:
            results.append(text(await up.call_tool("echo", {"n": n})))

        async with anyio.create_task_group() as tasks:
            for n in range(20):
                tasks.start_soon(call, n)
        assert sorted(results) == sorted(f"[('n', {n})]" for n in range(20))


async def test_a_killed_child_is_reported_and_replaced() -> None:
    async with running(UpstreamConnection("echo", stdio())) as up:
        with anyio.fail_after(15):
            await up.wait_ready()
        first = int(text(await up.call_tool("pid", {})))
        started = time.monotonic()
        crashed_at = time.time()
        with pytest.raises(
            UpstreamError, match="upstream echo: the connection was lost during crash"
        ):
            await up.call_tool("crash", {})
        assert time.monotonic() - started < 1.0
        await until(lambda: up.status.state is State.READY and up.status.since > crashed_at, 15)
        second = int(text(await up.call_tool("pid", {})))
        assert second != first
        assert gone(first)  # reaped, not left a zombie of ours


async def test_no_child_outlives_its_connection() -> None:
    async with running(UpstreamConnection("echo", stdio())) as up:
        with anyio.fail_after(15):
            await up.wait_ready()
        pid = int(text(await up.call_tool("pid", {})))
        assert not gone(pid)
    await until(lambda: gone(pid), 5)


async def test_a_hanging_call_times_out_and_later_calls_work() -> None:
    async with running(UpstreamConnection("echo", stdio(call_timeout=0.5))) as up:
        with anyio.fail_after(15):
            await up.wait_ready()
        started = time.monotonic()
        with pytest.raises(
            UpstreamError, match=r"sleep on upstream echo did not answer within 0\.5 s"
        ):
            await up.call_tool("sleep", {"seconds": 30})
        assert time.monotonic() - started < 2.0
        assert text(await up.call_tool("echo", {})) == "[]"


async def test_an_upstream_that_cannot_start_is_down_with_the_reason() -> None:
    connection = UpstreamConnection("ghost", stdio(command="/nonexistent/mcp-server", args=[]))
    async with running(connection) as up:
        await until(lambda: up.status.state is State.DOWN)
        assert up.status.error is not None
        assert "FileNotFoundError" in up.status.error or "No such file" in up.status.error
        with pytest.raises(UpstreamError, match="upstream ghost is not ready"):
            await up.call_tool("echo", {})


async def test_a_missing_variable_is_the_reason_it_is_down() -> None:
    upstream = stdio(env={"TOKEN": "${GATEWAY_TEST_UNSET_VARIABLE}"})
    async with running(UpstreamConnection("echo", upstream)) as up:
        await until(lambda: up.status.state is State.DOWN)
        assert up.status.error == (
            "upstream 'echo': env TOKEN refers to ${GATEWAY_TEST_UNSET_VARIABLE}, which is not "
            "set in the gateway's environment"
        )


async def test_a_disabled_upstream_is_never_started() -> None:
    connection = UpstreamConnection("off", stdio(enabled=False))
    with anyio.fail_after(5):
        await connection.run()
    assert connection.status.state is State.DISABLED


async def test_streamable_http_upstream_lists_and_calls() -> None:
    with http_echo() as url:
        upstream = HttpUpstream.model_validate({"transport": "streamable_http", "url": url})
        async with running(UpstreamConnection("web", upstream)) as up:
            with anyio.fail_after(15):
                await up.wait_ready()
            assert [tool.name for tool in up.tools] == ECHO_TOOLS
            assert text(await up.call_tool("echo", {"x": 1})) == "[('x', 1)]"


async def test_an_http_upstream_answering_500_is_down_then_recovers() -> None:
    # Enough failures for a few attempts in a row: one DOWN spell may be shorter than a poll.
    with http_echo(failures=8) as url:
        upstream = HttpUpstream.model_validate({"transport": "streamable_http", "url": url})
        async with running(UpstreamConnection("sick", upstream)) as up:
            await until(lambda: up.status.state is State.DOWN, 15)
            assert up.status.error is not None
            assert up.status.error == "MCPError: Server returned an error response"
            with anyio.fail_after(30):
                await up.wait_ready()
            assert up.status.error is None
            assert text(await up.call_tool("echo", {"x": 1})) == "[('x', 1)]"


async def test_sse_upstream_lists_and_calls() -> None:
    with http_echo("sse") as url:
        upstream = HttpUpstream.model_validate({"transport": "sse", "url": url})
        async with running(UpstreamConnection("legacy", upstream)) as up:
            with anyio.fail_after(15):
                await up.wait_ready()
            assert [tool.name for tool in up.tools] == ECHO_TOOLS
            assert text(await up.call_tool("echo", {"x": 1})) == "[('x', 1)]"


async def test_an_unreachable_http_upstream_is_down_with_the_reason() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    upstream = HttpUpstream.model_validate({"transport": "streamable_http", "url": url})
    assert not listening(int(url.split(":")[2].split("/")[0]))
    async with running(UpstreamConnection("web", upstream)) as up:
        await until(lambda: up.status.state is State.DOWN)
        assert up.status.error is not None
        assert "ConnectError" in up.status.error


async def test_announced_tool_changes_are_listed_within_a_second() -> None:
    changes: list[tuple[str, ...]] = []
    connection = UpstreamConnection(
        "echo", stdio(), on_change=lambda: changes.append(tuple(t.name for t in connection.tools))
    )
    async with running(connection) as up:
        with anyio.fail_after(15):
            await up.wait_ready()
        assert changes == [tuple(ECHO_TOOLS)]
        await up.call_tool("mutate", {})
        with anyio.fail_after(1):
            await until(lambda: len(changes) == 2, 1)
        assert changes[1] == (*ECHO_TOOLS, "added")


async def test_the_breaker_opens_after_failures_in_a_row_and_half_opens() -> None:
    breaker = Breaker(threshold=2, cooldown=0.5, max_cooldown=0.5)
    connection = UpstreamConnection("echo", stdio(call_timeout=0.3), breaker=breaker)
    async with running(connection) as up:
        with anyio.fail_after(15):
            await up.wait_ready()
        for _ in range(2):
            with pytest.raises(UpstreamError, match=r"did not answer within 0\.3 s"):
                await up.call_tool("sleep", {"seconds": 5})
        started = time.monotonic()
        with pytest.raises(UpstreamError, match=r"upstream echo failed 2 calls in a row; "):
            await up.call_tool("echo", {})
        assert time.monotonic() - started < 0.1  # failed fast: nothing was sent
        await anyio.sleep(0.6)
        assert text(await up.call_tool("echo", {})) == "[]"  # the probe closes it
        assert breaker.failures == 0
        # A tool's own error is an answer: it does not count against the upstream.
        for _ in range(3):
            with pytest.raises(MCPError):
                await up.call_tool("sleep", {"seconds": "soon"})  # the handler raises
        assert breaker.failures == 0
