"""Handshake era: a dropped connection is not a cancellation, and the client resumes with
Last-Event-ID, missing nothing; the events wait in the state store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from gateway.front import session_transport
from gateway.state import open_store
from tests.front import harness
from tests.front.harness import KEYS, Gateway, running_gateway
from tests.front.helpers import (
    ASKING,
    REPLIES,
    chatty_config,
    event_order,
    open_session,
    read_messages,
    rpc,
)

pytestmark = pytest.mark.anyio

VERSION = "2025-11-25"


async def events(response: httpx2.Response) -> Any:
    """(id, data) of each SSE event (test-only parsing of the few fields used here)."""
    event_id, data = None, []
    async for line in response.aiter_lines():
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line:
            text = "\n".join(data)
            if text:  # a priming event carries only an id
                yield event_id, json.loads(text)
            data = []


def progress_of(messages: list[Any]) -> list[int]:
    return [
        m["params"]["progress"] for m in messages if m.get("method") == "notifications/progress"
    ]


async def test_a_dropped_stream_resumes_and_the_call_goes_on(tmp_path: Path) -> None:
    async with (
        running_gateway(tmp_path) as gateway,
        httpx2.AsyncClient(timeout=10) as http,
    ):
        headers = {
            "Authorization": f"Bearer {KEYS['alice']}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        init = {"protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "t"}}
        opened = await http.post(gateway.url, json=rpc(1, "initialize", init), headers=headers)
        headers |= {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
        headers |= {"MCP-Protocol-Version": VERSION}
        await http.post(gateway.url, json=rpc(None, "notifications/initialized"), headers=headers)

        async def cancelled_count(ident: int) -> int:
            call = {"name": "echo__cancelled", "arguments": {}}
            async with http.stream(
                "POST", gateway.url, json=rpc(ident, "tools/call", call), headers=headers
            ) as response:
                if response.headers["content-type"] == "application/json":  # a quick answer
                    await response.aread()
                    return int(response.json()["result"]["content"][0]["text"])
                async for _, data in events(response):
                    if data.get("id") == ident:
                        return int(data["result"]["content"][0]["text"])
            raise AssertionError("no result")

        before = await cancelled_count(2)
        call = {
            "name": "echo__sleep",
            "arguments": {"seconds": 1.0},
            "_meta": {"progressToken": "p"},
        }
        seen: list[Any] = []
        last_id = None
        with anyio.fail_after(10):
            async with http.stream(
                "POST", gateway.url, json=rpc(3, "tools/call", call), headers=headers
            ) as response:
                async for event_id, data in events(response):
                    seen.append(data)
                    last_id = event_id
                    if data.get("method") == "notifications/progress":
                        break  # the connection drops after the first progress
        assert last_id is not None
        assert progress_of(seen) == [1]

        await anyio.sleep(1.3)  # the call finishes meanwhile, nobody listening
        resumed: list[Any] = []
        with anyio.fail_after(10):
            async with http.stream(
                "GET",
                gateway.url,
                headers={**headers, "Accept": "text/event-stream", "Last-Event-ID": last_id},
            ) as response:
                assert response.status_code == 200
                async for _, data in events(response):
                    resumed.append(data)
                    if data.get("id") == 3:
                        break
        assert progress_of(resumed) == list(range(2, 11))  # everything after what was seen
        logs = [d["params"]["data"] for d in resumed if d.get("method") == "notifications/message"]
        assert logs[-1] == {"step": 10}
        assert resumed[-1]["result"]["content"][0]["text"] == "slept"
        assert await cancelled_count(4) == before  # the drop did not cancel the call


STEPS = 100
MAX_RESUMES = 200


async def until_chatty(gateway: Gateway, headers: dict[str, str]) -> None:
    """Until the chatty upstream is up and its tool listed."""
    body = rpc(99, "tools/call", {"name": "echo__chatty", "arguments": {"steps": 1, "ask": False}})
    with anyio.fail_after(30):
        while True:
            async with httpx2.AsyncClient(timeout=20) as http:
                answer = await http.post(gateway.url, content=json.dumps(body), headers=headers)
            messages = [m async for m in read_messages(answer)]
            if "result" in messages[-1] and not messages[-1]["result"].get("isError"):
                return
            await anyio.sleep(0.2)


async def dropping_call(
    gateway: Gateway, headers: dict[str, str], ident: int, asks: bool, drop_after: int
) -> tuple[list[Any], list[str], int]:
    """A chatty call whose connection the client drops after every `drop_after` messages,
    resuming each time with `Last-Event-ID`, until the answer: the messages received,
    their event ids, and how many times it resumed."""
    arguments = {"steps": STEPS, "ask": asks, "pause": 0.005}
    body = rpc(ident, "tools/call", {"name": "echo__chatty", "arguments": arguments})
    body["params"]["_meta"] = {"progressToken": ident}
    messages: list[Any] = []
    ids: list[str] = []
    last: str | None = None
    async with httpx2.AsyncClient(timeout=20) as http:
        with anyio.fail_after(60):
            for resumes in range(MAX_RESUMES):
                if last is None:
                    opened = http.stream("POST", gateway.url, json=body, headers=headers)
                else:
                    resume = {**headers, "Accept": "text/event-stream", "Last-Event-ID": last}
                    opened = http.stream("GET", gateway.url, headers=resume)
                async with opened as response:
                    assert response.status_code == 200, await response.aread()
                    seen = 0
                    async for message, event_id in read_messages(response, with_ids=True):
                        if event_id is not None:
                            last = event_id
                        if message is None:
                            continue  # a priming event
                        if event_id is not None:
                            ids.append(event_id)
                        messages.append(message)
                        if message.get("method") in REPLIES:
                            reply = {
                                "jsonrpc": "2.0",
                                "id": message["id"],
                                "result": REPLIES[message["method"]],
                            }
                            sent = await http.post(gateway.url, json=reply, headers=headers)
                            assert sent.status_code == 202
                        if message.get("id") == ident and "method" not in message:
                            return messages, ids, resumes
                        seen += 1
                        if seen == drop_after:
                            break  # the connection drops
    raise AssertionError(f"no answer after {MAX_RESUMES} resumes")


@pytest.mark.parametrize(
    ("direct", "asks"),
    [(True, False), (True, True), (False, True)],
    ids=["gateway door", "gateway door, asked", "SDK door, asked"],
)
async def test_a_chatty_call_resumed_again_and_again_misses_and_repeats_nothing(
    tmp_path: Path, direct: bool, asks: bool
) -> None:
    """The upstream goes on reporting progress while the client reconnects: every resume
    delivers exactly the events after the id it names, in order, none twice."""
    async with running_gateway(tmp_path, chatty_config(direct)) as gateway:
        headers = await open_session(gateway, capabilities=ASKING if asks else None)
        await until_chatty(gateway, headers)
        for n, drop_after in enumerate((2, 5, 11)):
            ident = 200 + n
            messages, ids, resumes = await dropping_call(gateway, headers, ident, asks, drop_after)
            assert resumes >= STEPS // drop_after // 2, resumes  # it did resume, often
            assert progress_of(messages) == list(range(STEPS)), (drop_after, resumes)
            assert len(ids) == len(set(ids))
            assert ids == sorted(ids, key=event_order)
            methods = [message.get("method") for message in messages]
            assert methods.count("elicitation/create") == (1 if asks else 0)
            assert methods.count(None) == 1  # the answer, once, last
            assert messages[-1]["result"]["content"][0]["text"] == ("accept" if asks else "done")


async def first_event_id(gateway: Gateway, headers: dict[str, str], ident: int) -> str:
    """The event id of a call's first progress message (the call then runs on)."""
    call = {"name": "echo__sleep", "arguments": {"seconds": 0.5}, "_meta": {"progressToken": 1}}
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            async with http.stream(
                "POST", gateway.url, json=rpc(ident, "tools/call", call), headers=headers
            ) as response:
                async for message, event_id in read_messages(response, with_ids=True):
                    if message is not None and event_id is not None:
                        return str(event_id)
    raise AssertionError("no event with an id")


async def test_a_malformed_or_unknown_last_event_id_is_refused(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gateway:
        mine = await open_session(gateway)
        other = await open_session(gateway)  # the same caller's other session
        event_id = await first_event_id(gateway, mine, 5)
        position, _, stream = event_id.partition("/")
        refused = {
            "not an id": "abc",
            "negative": "-1",
            "10 KB": "9" * 10240,
            "no stream": position,
            "the id before every event": f"0-0/{stream}",
            "beyond 64 bits": f"{2**64}-0/{stream}",
            "another stream": f"{position}/{stream}9",
            "an event that is not": f"{position.split('-')[0]}-77/{stream}",
        }
        async with httpx2.AsyncClient(timeout=10) as http:

            async def resume(headers: dict[str, str], last: str) -> httpx2.Response:
                sent = {**headers, "Accept": "text/event-stream", "Last-Event-ID": last}
                with anyio.fail_after(10):
                    async with http.stream("GET", gateway.url, headers=sent) as response:
                        await response.aread()
                        return response

            for case, last in refused.items():
                answer = await resume(mine, last)
                assert answer.status_code == 400, case
                assert answer.json()["error"]["code"] == -32600, case
            # Another session's id names nothing in this one.
            foreign = await resume(other, event_id)
            assert foreign.status_code == 400
            assert "no event of this session" in foreign.json()["error"]["message"]
            # The good id resumes: the rest of the call, to its answer.
            sent = {**mine, "Accept": "text/event-stream", "Last-Event-ID": event_id}
            with anyio.fail_after(10):
                async with http.stream("GET", gateway.url, headers=sent) as response:
                    assert response.status_code == 200
                    rest = [m async for m in read_messages(response)]
            assert rest[-1]["result"]["content"][0]["text"] == "slept"


async def _call(
    gateway: Gateway, headers: dict[str, str], ident: int, *, first_only: bool = False
) -> str | None:
    """A chatty call: the id of its first event (`first_only`, dropping the connection
    there), or of its answer."""
    body = rpc(ident, "tools/call", {"name": "echo__chatty", "arguments": {"steps": 30}})
    body["params"]["_meta"] = {"progressToken": ident}
    arguments = body["params"]["arguments"]
    arguments.update(ask=False, pause=0.001)
    async with (
        httpx2.AsyncClient(timeout=20) as http,
        http.stream("POST", gateway.url, json=body, headers=headers) as response,
    ):
        async for message, event_id in read_messages(response, with_ids=True):
            if first_only and message is not None and event_id is not None:
                return str(event_id)
            if message is not None and message.get("id") == ident and "method" not in message:
                return str(event_id) if event_id is not None else None
    return None


@pytest.mark.parametrize("direct", [True, False])
async def test_a_resume_whose_answer_was_lost_ends_after_the_gap(
    tmp_path: Path, direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stream capped at 10 events: a later call trims a finished call's answer away, and
    # its resume can only say so. It must end, not wait for an answer that will not come.
    monkeypatch.setattr(harness, "open_store", lambda url, ttls, _cap: open_store(url, ttls, 10))
    monkeypatch.setattr(session_transport, "GAP_IDLE_SECONDS", 1.0)
    async with running_gateway(tmp_path, chatty_config(direct)) as gateway:
        headers = await open_session(gateway)
        await until_chatty(gateway, headers)
        first = await _call(gateway, headers, 300, first_only=True)
        assert first is not None
        await _call(gateway, headers, 301)  # 300 has ended meanwhile, and 301 trims it
        resume = {**headers, "Accept": "text/event-stream", "Last-Event-ID": first}
        with anyio.fail_after(15):
            async with (
                httpx2.AsyncClient(timeout=20) as http,
                http.stream("GET", gateway.url, headers=resume) as response,
            ):
                assert response.status_code == 200
                got = [message async for message, _ in read_messages(response, with_ids=True)]
    notices = [m for m in got if m is not None and m.get("method") == "notifications/message"]
    assert notices[0]["params"]["data"]["error"] == "stream_gap"
