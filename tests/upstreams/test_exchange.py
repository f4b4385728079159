"""Tool calls as hand-built 2026-07-28 exchanges (exchange.py) against the SDK client path:
the same calls to the same streamable-HTTP upstream, compared field by field."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import mcp_types as types
import pytest
from mcp import MCPError

from gateway.errors import ConnectionLost, UpstreamUnavailable
from gateway.upstreams.config import HttpUpstream
from gateway.upstreams.connection import UpstreamConnection
from gateway.upstreams.exchange import CAPABILITIES, Exchange, ExchangeUnsent
from gateway.upstreams.relay import ElicitationAnswer, SamplingAnswer
from gateway.upstreams.requests import InputRound
from gateway.upstreams.transports import CLIENT_INFO
from tests.helpers import until
from tests.redis_server import free_port
from tests.upstreams.helpers import http_echo, running, text

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def both(url: str) -> AsyncIterator[tuple[UpstreamConnection, UpstreamConnection]]:
    """Two connections to the upstream at `url`: hand-built calls, and the SDK client's."""
    config = HttpUpstream.model_validate({"transport": "streamable_http", "url": url})
    async with (
        running(UpstreamConnection("direct", config)) as direct,
        running(UpstreamConnection("sdk", config, direct_calls=False)) as sdk,
    ):
        with anyio.fail_after(15):
            await direct.wait_ready()
            await sdk.wait_ready()
        assert direct.calls_direct
        assert not sdk.calls_direct
        yield direct, sdk


async def outcome(up: UpstreamConnection, tool: str, arguments: dict[str, Any]) -> Any:
    """What a caller gets: the result as JSON, or the error's code and message."""
    try:
        result = await up.call_tool(tool, arguments)
    except MCPError as exc:
        return ("error", exc.error.code, exc.error.message)
    return result.model_dump(by_alias=True, mode="json", exclude_none=True)


CALLS: list[tuple[str, dict[str, Any]]] = [
    ("echo", {}),
    ("echo", {"x": 1}),
    ("echo", {"text": "héllo ✓ 日本", "nested": {"a": [1, 2.5, None, True], "b": {}}}),
    ("echo", {"big": 123456789012345678901234567890, "small": -(2**63)}),  # exact both ways
    ("echo", {"region": "eu-west"}),  # also an Mcp-Param-Region header, checked upstream
    ("echo", {"region": "Zürich"}),  # a header value that must be base64-wrapped
    ("sleep", {"seconds": "soon"}),  # the handler raises: a tool error
    ("no_such_tool", {}),  # the upstream's own error answer
]


async def test_results_and_errors_match_the_sdk_client() -> None:
    with http_echo() as url:
        async with both(url) as (direct, sdk):
            for tool, arguments in CALLS:
                expected = await outcome(sdk, tool, arguments)
                assert await outcome(direct, tool, arguments) == expected, (tool, arguments)
            # The call really carried the header: a wrong one is refused upstream.
            assert (await outcome(direct, "echo", {"region": "eu-west"}))["isError"] is False


async def test_progress_and_logs_match_the_sdk_client() -> None:
    seen: dict[str, list[Any]] = {"direct": [], "sdk": []}

    def recorder(name: str) -> Any:
        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen[name].append(("progress", progress, total, message))

        async def on_log(params: types.LoggingMessageNotificationParams) -> None:
            seen[name].append(("log", params.level, params.logger, params.data))

        return on_progress, on_log

    with http_echo() as url:
        async with both(url) as (direct, sdk):
            for up in (direct, sdk):
                on_progress, on_log = recorder(up.name)
                result = await up.call_tool(
                    "sleep", {"seconds": 0.3}, on_progress=on_progress, on_log=on_log
                )
                assert text(result) == "slept"
    assert seen["direct"] == seen["sdk"]
    assert seen["direct"][:2] == [
        ("progress", 1, 3, "step 1"),
        ("log", "info", "sleep", {"step": 1}),
    ]
    assert len(seen["direct"]) == 6


async def test_cancelling_a_direct_call_cancels_it_upstream() -> None:
    with http_echo() as url:
        async with both(url) as (direct, _sdk):
            before = int(text(await direct.call_tool("cancelled", {})))
            with anyio.move_on_after(0.3):
                await direct.call_tool("sleep", {"seconds": 10})

            async def counted() -> bool:
                return int(text(await direct.call_tool("cancelled", {}))) == before + 1

            for _ in range(50):
                if await counted():
                    break
                await anyio.sleep(0.05)
            assert await counted()


class Answers:
    """A caller that answers sampling and elicitation, and counts the questions."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def create_message(self, params: types.CreateMessageRequestParams) -> SamplingAnswer:
        self.asked.append("sampling")
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="hi"), model="m"
        )

    async def elicit(self, params: types.ElicitRequestParams) -> ElicitationAnswer:
        self.asked.append("elicitation")
        return types.ElicitResult(action="accept", content={"ok": True})


async def test_input_required_goes_back_to_a_modern_caller_and_is_asked_of_a_handshake_one() -> (
    None
):
    with http_echo() as url:
        async with both(url) as (direct, sdk):
            for tool in ("ask", "confirm"):
                # A 2026-07-28 caller gets the question back, to answer in its retry.
                rounds = [
                    await up.call_tool(tool, {}, input_round=InputRound()) for up in (direct, sdk)
                ]
                assert isinstance(rounds[0], types.InputRequiredResult)
                assert rounds[0] == rounds[1]
                # A handshake-era caller is asked during the call, by the SDK client.
                answers = [Answers(), Answers()]
                results = [
                    await up.call_tool(tool, {}, asker=answer)
                    for up, answer in zip((direct, sdk), answers, strict=True)
                ]
                assert text(results[0]) == text(results[1])
                assert answers[0].asked == answers[1].asked == [answers[0].asked[0]]
            assert text(results[0]) == "accept {'ok': True}"


async def test_a_connection_lost_mid_call_is_reported_and_reconnected() -> None:
    with http_echo() as url:
        config = HttpUpstream.model_validate({"transport": "streamable_http", "url": url})
        async with running(UpstreamConnection("direct", config)) as up:
            with anyio.fail_after(15):
                await up.wait_ready()
            assert up.calls_direct
            with pytest.raises(ConnectionLost, match="the connection was lost during crash"):
                await up.call_tool("crash", {})
            await until(lambda: not up.calls_direct, 5)


async def test_an_exchange_that_cannot_connect_says_nothing_was_sent() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
    exchange = Exchange("up", url, {}, "2026-07-28", CLIENT_INFO, CAPABILITIES)
    try:
        tool = types.Tool(name="pay", input_schema={"type": "object"})
        with anyio.fail_after(10), pytest.raises(ExchangeUnsent):
            await exchange.call_tool(tool, {})
    finally:
        await exchange.aclose()


async def test_a_call_to_an_upstream_gone_is_unavailable_not_lost() -> None:
    """Whether the exchange or the session notices first, the upstream is gone before the
    call: it was never sent, which says it is safe to make again (a lost connection does
    not: the call may have taken effect)."""
    with contextlib.ExitStack() as upstream:
        url = upstream.enter_context(http_echo())
        config = HttpUpstream.model_validate({"transport": "streamable_http", "url": url})
        async with running(UpstreamConnection("direct", config)) as up:
            with anyio.fail_after(15):
                await up.wait_ready()
            assert up.calls_direct
            upstream.close()  # the process ended: nothing listens on its port
            with anyio.fail_after(15), pytest.raises(UpstreamUnavailable, match="not sent"):
                await up.call_tool("echo", {"n": 1})


@dataclass
class Cuts:
    """What dropping_proxy does: answers to cut off still, and tools/call requests seen."""

    left: int = 0
    calls: int = 0


@asynccontextmanager
async def dropping_proxy(upstream_url: str, cuts: Cuts) -> AsyncIterator[str]:
    """A TCP proxy in front of `upstream_url` that forwards everything, except that it
    cuts off the answers of the next `cuts.left` tools/call requests (the connection
    aborted as the answer comes back, after the upstream ran the call): its URL."""
    port = int(upstream_url.split(":")[2].split("/")[0])

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        cut = False

        async def forward() -> None:
            nonlocal cut
            while data := await reader.read(65536):
                if b'"method":"tools/call"' in data:
                    cuts.calls += 1
                    if cuts.left > 0:
                        cuts.left -= 1
                        cut = True
                upstream_writer.write(data)
                await upstream_writer.drain()
            upstream_writer.close()

        async def back() -> None:
            while data := await upstream_reader.read(65536):
                if cut:
                    writer.transport.abort()
                    upstream_writer.transport.abort()
                    return
                writer.write(data)
                await writer.drain()
            writer.close()

        with contextlib.suppress(ConnectionError):
            await asyncio.gather(forward(), back())

    server = await asyncio.start_server(pipe, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/mcp"
    finally:
        server.close()


async def test_a_call_safe_to_repeat_goes_again_at_once_when_only_its_exchange_broke_off() -> None:
    """The upstream's session goes on when one exchange breaks off (a reset, a stale
    keep-alive cut by something in between), so no next session comes: the retry used
    to wait for one until call_timeout, then go out too late and fail as a timeout,
    counted twice by the breaker."""
    cuts = Cuts(left=1)
    with http_echo() as upstream:
        async with dropping_proxy(upstream, cuts) as url:
            config = HttpUpstream.model_validate(
                {"transport": "streamable_http", "url": url, "call_timeout": 30}
            )
            async with running(UpstreamConnection("direct", config)) as up:
                with anyio.fail_after(15):
                    await up.wait_ready()
                assert up.calls_direct
                with anyio.fail_after(15):
                    result = await up.call_tool("echo", {"n": 1}, retry=True)
                assert text(result) == "[('n', 1)]"
                assert (cuts.calls, cuts.left) == (2, 0)  # the one cut off, and the retry
                assert up.breaker.failures == 0  # the retry's success
                # Not safe to repeat: once, and the connection lost is the answer.
                cuts.calls, cuts.left = 0, 1
                with anyio.fail_after(15), pytest.raises(ConnectionLost):
                    await up.call_tool("echo", {"n": 2})
                assert cuts.calls == 1
                assert text(await up.call_tool("echo", {"n": 3})) == "[('n', 3)]"


async def test_a_redirect_is_not_followed_with_the_upstreams_credentials() -> None:
    """The SDK client follows no redirect to another origin; nor does an exchange, whose
    configured headers may carry the upstream's credentials."""
    seen: list[bytes] = []

    async def elsewhere(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.read(65536))
        writer.close()

    async def redirecting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(
            b"HTTP/1.1 307 Temporary Redirect\r\n"
            + f"Location: http://127.0.0.1:{other_port}/mcp\r\n".encode()
            + b"Content-Length: 0\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    other = await asyncio.start_server(elsewhere, "127.0.0.1", 0)
    other_port = other.sockets[0].getsockname()[1]
    first = await asyncio.start_server(redirecting, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{first.sockets[0].getsockname()[1]}/mcp"
    exchange = Exchange("up", url, {"X-Api-Key": "secret"}, "2026-07-28", CLIENT_INFO, CAPABILITIES)
    try:
        with pytest.raises(MCPError, match="Server returned an error response"):
            await exchange.call_tool(types.Tool(name="echo", input_schema={}), {})
    finally:
        await exchange.aclose()
        for server in (first, other):
            server.close()
            await server.wait_closed()
    assert seen == []


async def test_an_answer_too_deep_to_parse_fails_the_call_at_once() -> None:
    """A raw HTTP upstream answers with an SSE event nested 5,000 deep (past any parser's
    limit) and keeps the stream open: the call must fail then, not at its timeout."""
    deep = "[" * 5000 + "]" * 5000

    async def answer(client: anyio.abc.SocketStream) -> None:
        async with client:
            request = b""
            with anyio.fail_after(10):
                while b"\r\n\r\n" not in request:
                    request += await client.receive()
                head, _, body = request.partition(b"\r\n\r\n")
                found = re.search(rb"(?i)content-length: *(\d+)", head)
                assert found is not None
                while len(body) < int(found.group(1)):
                    body += await client.receive()
            request_id = json.loads(body)["id"]
            event = (
                f'{{"jsonrpc":"2.0","id":{request_id},"result":{{"content":[],'
                f'"structuredContent":{{"v":{deep}}}}}}}'
            )
            await client.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
                + f"event: message\ndata: {event}\n\n".encode()
            )
            await anyio.sleep(30)  # the stream stays open

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, answer)
        exchange = Exchange(
            "deep", f"http://127.0.0.1:{port}/mcp", {}, "2026-07-28", CLIENT_INFO, CAPABILITIES
        )
        try:
            with anyio.fail_after(10), pytest.raises(MCPError, match="could not be read"):
                await exchange.call_tool(types.Tool(name="t", input_schema={"type": "object"}), {})
        finally:
            await exchange.aclose()
            tasks.cancel_scope.cancel()
