"""The front while its Redis state store is killed (-9) and started again: readiness
says so, no session is opened that could not resume, a resume that cannot be complete
says what is missing, and a session that ends takes its events with it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from tests.front.harness import Gateway, gateway_yaml, running_gateway
from tests.front.helpers import open_session, read_messages, rpc
from tests.redis_server import RedisServer, running

pytestmark = pytest.mark.anyio

POLLS = 200
POLL = 0.05


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


DURABLE = ("--appendonly", "yes", "--appendfsync", "always")
"""Options of a redis-server that keeps every acknowledged write across a kill -9."""


@contextmanager
def redis_server(directory: Path, *options: str) -> Iterator[RedisServer]:
    directory.mkdir()
    server = RedisServer(directory, *options)
    with running(server):
        yield server


@asynccontextmanager
async def gateway_on(
    server: RedisServer, tmp_path: Path, prefix: str = ""
) -> AsyncIterator[Gateway]:
    directory = tmp_path / "gateway"
    directory.mkdir()
    config = prefix + gateway_yaml()
    async with running_gateway(directory, config, state_url=server.url) as gateway:
        yield gateway


def restart(server: RedisServer) -> None:
    server.start()
    server.wait_ready()


async def ready(http: httpx2.AsyncClient, gateway: Gateway) -> int:
    answer = await http.get(gateway.url.removesuffix("/mcp") + "/ready")
    return answer.status_code


async def until_ready(http: httpx2.AsyncClient, gateway: Gateway, wanted: int) -> None:
    for _ in range(POLLS):
        if await ready(http, gateway) == wanted:
            return
        await anyio.sleep(POLL)
    raise AssertionError(f"/ready never answered {wanted}")


async def test_ready_follows_the_store_with_no_traffic(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as server:
        async with gateway_on(server, tmp_path) as gateway, httpx2.AsyncClient(timeout=10) as http:
            await until_ready(http, gateway, 200)
            server.kill()
            await until_ready(http, gateway, 503)  # nothing else asks the store
            answers = [await ready(http, gateway) for _ in range(50)]
            assert answers == [503] * 50  # and it stays so, however often it is asked
            body = (await http.get(gateway.url.removesuffix("/mcp") + "/ready")).json()
            assert body["ready"] is False
            assert body["state"]["reason"]
            restart(server)
            await until_ready(http, gateway, 200)


async def test_no_session_is_opened_while_the_store_is_away(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as server:
        async with gateway_on(server, tmp_path) as gateway, httpx2.AsyncClient(timeout=10) as http:
            await until_ready(http, gateway, 200)
            server.kill()
            await until_ready(http, gateway, 503)
            headers = {
                "Authorization": "Bearer alice-key-0123456789abcdef",
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
            }
            init = {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t"},
            }
            for _ in range(3):
                answer = await http.post(
                    gateway.url, json=rpc(1, "initialize", init), headers=headers
                )
                assert answer.status_code == 503
                assert int(answer.headers["retry-after"]) >= 1
                assert "mcp-session-id" not in answer.headers
                assert answer.json()["error"]["code"] == -32603
            restart(server)
            await until_ready(http, gateway, 200)
            opened = await http.post(gateway.url, json=rpc(1, "initialize", init), headers=headers)
            assert opened.status_code == 200
            assert opened.headers["mcp-session-id"]


@pytest.mark.parametrize("durable", [True, False], ids=["Redis keeps its data", "Redis loses it"])
async def test_a_resume_across_an_outage_says_what_is_missing(
    tmp_path: Path, durable: bool
) -> None:
    """Events of the call that could not be stored while Redis was away (and, when it
    came back empty, those it had) are missing: the resume says so first."""
    with redis_server(tmp_path / "redis", *(DURABLE if durable else ())) as server:
        async with gateway_on(server, tmp_path) as gateway, httpx2.AsyncClient(timeout=10) as http:
            await until_ready(http, gateway, 200)
            headers = await open_session(gateway)
            call = {
                "name": "echo__sleep",
                "arguments": {"seconds": 3.0},
                "_meta": {"progressToken": "p"},
            }
            first: str | None = None
            with anyio.fail_after(10):
                async with http.stream(
                    "POST", gateway.url, json=rpc(3, "tools/call", call), headers=headers
                ) as response:
                    async for message, event_id in read_messages(response, with_ids=True):
                        if message is not None and event_id is not None:
                            first = event_id
                            break  # the connection drops after the first progress
            assert first is not None
            server.kill()
            await until_ready(http, gateway, 503)
            await anyio.sleep(0.5)  # progress goes on meanwhile, and cannot be stored
            restart(server)
            await until_ready(http, gateway, 200)
            resume = {**headers, "Accept": "text/event-stream", "Last-Event-ID": first}
            with anyio.fail_after(15):
                async with http.stream("GET", gateway.url, headers=resume) as response:
                    assert response.status_code == 200
                    resumed: list[Any] = [m async for m in read_messages(response)]
            notice = resumed[0]
            assert notice["method"] == "notifications/message"
            assert notice["params"]["data"]["error"] == "stream_gap"
            assert notice["params"]["data"]["lastEventId"] == first
            # It ends with the answer, stored once the store was back, and only once.
            [answer] = [m for m in resumed if m.get("id") == 3]
            assert answer["result"]["content"][0]["text"] == "slept"


async def test_a_session_that_ends_takes_its_events_with_it(tmp_path: Path) -> None:
    prefix = "server: {session_idle_timeout: 1}\n"
    with redis_server(tmp_path / "redis") as server:
        async with gateway_on(server, tmp_path, prefix) as gateway:
            store = gateway.app.state.store

            async def session_with_events() -> tuple[dict[str, str], str]:
                headers = await open_session(gateway)
                session = headers["Mcp-Session-Id"]
                call = {
                    "name": "echo__sleep",
                    "arguments": {"seconds": 0.7},
                    "_meta": {"progressToken": 1},
                }
                async with httpx2.AsyncClient(timeout=10) as http:
                    await http.post(gateway.url, json=rpc(2, "tools/call", call), headers=headers)
                keys = await store.debug_keys(f"STREAM:{{mcp%3A{session}}}:*")
                assert keys, "the call left no events"
                return headers, session

            headers, session = await session_with_events()
            async with httpx2.AsyncClient(timeout=10) as http:
                ended = await http.delete(gateway.url, headers=headers)
            assert ended.status_code == 200
            # The SDK discards the session once its task ends, after the DELETE's answer.
            for _ in range(POLLS):
                if not await store.debug_keys(f"*{session}*"):
                    break
                await anyio.sleep(POLL)
            assert await store.debug_keys(f"*{session}*") == {}

            _, idle = await session_with_events()
            for _ in range(POLLS):  # the idle timeout ends it
                if not await store.debug_keys(f"*{idle}*"):
                    break
                await anyio.sleep(POLL)
            assert await store.debug_keys(f"*{idle}*") == {}
