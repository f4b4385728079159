"""The two doors of a handshake-era caller's tools/call and tools/list on an open session:
the gateway's own (front/session_calls.py) and the SDK's (`server.direct_calls: false`).
The same raw requests go, on sessions opened alike, to one gateway of each kind in front
of the same upstreams; what a client receives (status, the session header, every
JSON-RPC message) must be the same. The form may differ, as the era allows: the SDK
always answers with SSE, the gateway answers a call that has nothing to send before its
answer as one JSON response (test_the_forms_of_an_answer)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from gateway.front.events import SessionEvents
from gateway.front.session_calls import _CANCELLED, SessionCalls
from gateway.state import StateError
from gateway.state.memory import MemoryStore
from tests.front.harness import KEYS, Gateway, running_gateway
from tests.front.helpers import (
    ASKING,
    REPLIES,
    SESSION_VERSION,
    Answer,
    chatty_config,
    doors_config,
    event_order,
    gateways,
    open_session,
    read_messages,
    said_in,
    session_call,
    session_post,
    sse_events,
)
from tests.upstreams.helpers import http_echo

pytestmark = pytest.mark.anyio


def _list(params: Any = None) -> Any:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": "l1", "method": "tools/list"}
    return body if params is None else {**body, "params": params}


CASES: dict[str, tuple[str, Any, dict[str, str | None]]] = {
    # case: (session, body, header changes)
    "a call": ("alice", session_call("echo__echo", {"n": 3}), {}),
    "unicode arguments": (
        "alice",
        session_call("echo__echo", {"n": 1, "text": "héllo ✓ 日本"}),
        {},
    ),
    "out of scope": ("alice", session_call("echo__echo", {"n": 50}), {}),
    "denied tool": ("alice", session_call("echo__crash", {}), {}),
    "granted to no one": ("alice", session_call("tiny__echo", {}), {}),
    "no such tool": ("alice", session_call("echo__nothing", {}), {}),
    "arguments against the schema": ("alice", session_call("echo__sleep", {"seconds": "soon"}), {}),
    "a tool error upstream": ("alice", session_call("echo__sleep", {"seconds": None}), {}),
    "progress and logs": (
        "alice",
        session_call("echo__sleep", {"seconds": 0.3}, {"progressToken": 1}),
        {},
    ),
    "logs without progress": ("alice", session_call("echo__sleep", {"seconds": 0.2}), {}),
    "a string id": ("alice", {**session_call("echo__echo", {}), "id": "call-1"}, {}),
    "a number beyond 64 bits": (
        "alice",
        session_call("echo__echo", {"n": 1, "big": 123456789012345678901234567890}),
        {},
    ),
    "arguments not an object": ("alice", session_call("echo__echo", [1, 2]), {}),
    "name not a string": ("alice", session_call(5, {}), {}),
    "no params": ("alice", {"jsonrpc": "2.0", "id": 3, "method": "tools/call"}, {}),
    "params not an object": ("alice", {**session_call("echo__echo", {}), "params": [1]}, {}),
    "sampling, not declared": ("alice", session_call("echo__ask", {"prompt": "hi"}), {}),
    "elicitation, not declared": ("alice", session_call("echo__confirm", {}), {}),
    "a listing": ("alice", _list({}), {}),
    "a listing without params": ("alice", _list(), {}),
    "a listing with a cursor": ("alice", _list({"cursor": "abc"}), {}),
    "a listing with a bad cursor": ("alice", _list({"cursor": 5}), {}),
    "a listing of bob's": ("bob", _list({}), {}),
    "a call of bob's": ("bob", session_call("tiny__echo", {"x": 1}), {}),
    "a 2025-06-18 session": ("alice-0618", session_call("echo__echo", {"n": 2}), {}),
    "a 2025-06-18 listing": ("alice-0618", _list({}), {}),
    "no version header": (
        "alice",
        session_call("echo__echo", {"n": 2}),
        {"MCP-Protocol-Version": None},
    ),
    "another caller's session": (
        "alice",
        session_call("echo__echo", {"n": 2}),
        {"Authorization": f"Bearer {KEYS['bob']}"},
    ),
    "an unknown session": ("alice", session_call("echo__echo", {}), {"Mcp-Session-Id": "f" * 32}),
    "accepts JSON only": ("alice", session_call("echo__echo", {}), {"Accept": "application/json"}),
    "wrong content type": ("alice", session_call("echo__echo", {}), {"Content-Type": "text/plain"}),
    "foreign host": ("alice", session_call("echo__echo", {}), {"Host": "evil.example:80"}),
    "foreign origin": ("alice", session_call("echo__echo", {}), {"Origin": "https://evil.example"}),
    "JSON-RPC 1.0": ("alice", {**session_call("echo__echo", {}), "jsonrpc": "1.0"}, {}),
}

SESSIONS = {
    "alice": ("alice", SESSION_VERSION),
    "bob": ("bob", SESSION_VERSION),
    "alice-0618": ("alice", "2025-06-18"),
}


@asynccontextmanager
async def counted(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[str]]:
    """The requests the gateway's own door answered (by method)."""
    served: list[str] = []
    answer = SessionCalls._answer

    async def counting(
        self: SessionCalls, stream: Any, message: Any, connection: Any, asker: Any, caller: Any
    ) -> None:
        served.append(message["method"])
        await answer(self, stream, message, connection, asker, caller)

    monkeypatch.setattr(SessionCalls, "_answer", counting)
    yield served


async def test_both_doors_answer_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with counted(monkeypatch) as served, gateways(tmp_path) as both:
        sessions = {
            door: {
                name: await open_session(gateway, user, version)
                for name, (user, version) in SESSIONS.items()
            }
            for door, gateway in both.items()
        }
        for case, (session, body, changes) in CASES.items():
            direct = await session_post(
                both["direct"], sessions["direct"][session], body, **changes
            )
            sdk = await session_post(both["sdk"], sessions["sdk"][session], body, **changes)
            assert said_in(direct) == said_in(sdk), case
        # logging/setLevel goes through the SDK; the level holds for the other door's calls
        level = {"jsonrpc": "2.0", "id": 9, "method": "logging/setLevel", "params": {}}
        level["params"] = {"level": "error"}
        _, body, _ = CASES["logs without progress"]
        for door, gateway in both.items():
            assert (await session_post(gateway, sessions[door]["alice"], level))[0] == 200
        direct = await session_post(both["direct"], sessions["direct"]["alice"], body)
        sdk = await session_post(both["sdk"], sessions["sdk"]["alice"], body)
        assert said_in(direct) == said_in(sdk)
        assert len(said_in(direct)[2]) == 1  # the answer, no logs
    # Each case served by the gateway's door, except those the SDK refuses before any
    # handler and the one whose params are not an object (handed to the SDK as they are).
    refused = {"another caller's session", "an unknown session", "accepts JSON only"}
    refused |= {"wrong content type", "foreign host", "foreign origin", "JSON-RPC 1.0"}
    refused |= {"params not an object"}
    assert len(served) == len(CASES) - len(refused) + 1


async def asked(
    gateway: Gateway, headers: dict[str, str], body: Any, *, drop_after_question: bool = False
) -> list[Any]:
    """A call whose upstream asks the caller: every message the caller receives, each
    question answered (a POST of the reply, as a client does) as it comes. With
    `drop_after_question`, the caller drops the call's stream once it has the question,
    answers it, and resumes with `Last-Event-ID` (a GET) for the rest."""
    messages: list[Any] = []
    last_id: str | None = None
    async with httpx2.AsyncClient(timeout=20) as http:

        async def reply(question: dict[str, Any]) -> None:
            answer = {"jsonrpc": "2.0", "id": question["id"], "result": REPLIES[question["method"]]}
            sent = await http.post(gateway.url, content=json.dumps(answer), headers=headers)
            assert sent.status_code == 202, sent.text

        async def read(response: httpx2.Response) -> bool:
            """Reads events until the answer (True) or a dropped stream (False)."""
            nonlocal last_id
            async for message, event_id in read_messages(response, with_ids=True):
                last_id = event_id or last_id
                if message is None:
                    continue  # a priming event
                messages.append(message)
                if message.get("method") in REPLIES:
                    if drop_after_question:
                        questions.append(message)
                        return False
                    await reply(message)
                elif message.get("id") == body["id"]:
                    return True
            return False

        questions: list[Any] = []
        async with http.stream("POST", gateway.url, content=json.dumps(body), headers=headers) as r:
            assert r.status_code == 200
            if await read(r):
                return messages
        assert questions
        assert last_id is not None  # resumable: the question came with an id
        await reply(questions[0])
        # As a client reconnects: until the server has seen the old stream go, a resumed
        # one replays what was stored and ends; the next attempt follows the call live.
        for _ in range(50):
            resume = {**headers, "Last-Event-ID": last_id}
            with anyio.fail_after(20):
                async with http.stream("GET", gateway.url, headers=resume) as r:
                    assert r.status_code == 200
                    if await read(r):
                        return messages
            await anyio.sleep(0.1)
    raise AssertionError(f"no answer after resuming: {messages}")


async def test_both_doors_ask_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A caller that declared sampling and elicitation is asked on its session during a
    call, through either door, and sees the same messages; also when it drops the call's
    stream after the question and resumes it."""
    async with counted(monkeypatch) as served, gateways(tmp_path) as both:
        said: dict[str, list[Any]] = {}
        for door, gateway in both.items():
            headers = await open_session(gateway, capabilities=ASKING)
            for tool in ("echo__ask", "echo__confirm"):
                said[f"{door} {tool}"] = await asked(gateway, headers, session_call(tool, {}))
                said[f"{door} {tool} resumed"] = await asked(
                    gateway, headers, session_call(tool, {}), drop_after_question=True
                )
        for case in ("echo__ask", "echo__confirm", "echo__ask resumed", "echo__confirm resumed"):
            assert said[f"direct {case}"] == said[f"sdk {case}"], case
    assert said["direct echo__ask"][0]["method"] == "sampling/createMessage"
    assert said["direct echo__ask"][-1]["result"]["content"][0]["text"] == "model said: yes"
    assert said["direct echo__confirm"][-1]["result"]["content"][0]["text"] == (
        "accept {'ok': True}"
    )
    assert served == ["tools/call"] * 4  # the gateway's door served its four


async def test_a_call_cancelled_with_a_question_pending_withdraws_it_alike(
    tmp_path: Path,
) -> None:
    """Cancelled while its question waits for the caller: the caller hears the question
    withdrawn (notifications/cancelled), then the call's end, through either door."""
    said: dict[str, list[Any]] = {}
    async with gateways(tmp_path) as both:
        for door, gateway in both.items():
            headers = await open_session(gateway, capabilities=ASKING)
            body = session_call("echo__confirm", {})
            messages: list[Any] = said.setdefault(door, [])
            async with (
                httpx2.AsyncClient(timeout=20) as http,
                http.stream("POST", gateway.url, content=json.dumps(body), headers=headers) as r,
            ):
                with anyio.fail_after(20):
                    async for message in read_messages(r):
                        messages.append(message)
                        if message.get("method") == "elicitation/create":
                            cancel = {
                                "jsonrpc": "2.0",
                                "method": "notifications/cancelled",
                                "params": {"requestId": body["id"]},
                            }
                            sent = await http.post(
                                gateway.url, content=json.dumps(cancel), headers=headers
                            )
                            assert sent.status_code == 202
                        elif message.get("id") == body["id"]:
                            break
    assert said["direct"] == said["sdk"]
    methods = [message.get("method") for message in said["direct"]]
    assert methods == ["elicitation/create", "notifications/cancelled", None]
    assert said["direct"][-1]["error"] == _CANCELLED


async def test_a_call_that_asks_sends_its_messages_in_the_order_they_are_stored(
    tmp_path: Path,
) -> None:
    """The upstream asks while it reports progress: the question and the progress come
    from two sources at once, and still reach the caller in the order of their event ids,
    so that a resume with `Last-Event-ID` neither misses nor repeats one."""
    async with running_gateway(tmp_path, chatty_config(direct=True)) as gateway:
        headers = await open_session(gateway, capabilities=ASKING)
        for n in range(10):
            body = {
                "jsonrpc": "2.0",
                "id": 100 + n,
                "method": "tools/call",
                "params": {"name": "echo__chatty", "arguments": {}, "_meta": {"progressToken": n}},
            }
            ids: list[tuple[int, ...]] = []
            methods: list[str | None] = []
            with anyio.fail_after(30):
                while True:  # until the upstream is up and the tool is granted
                    async with (
                        httpx2.AsyncClient(timeout=20) as http,
                        http.stream(
                            "POST", gateway.url, content=json.dumps(body), headers=headers
                        ) as r,
                    ):
                        async for message, event_id in read_messages(r, with_ids=True):
                            if event_id is not None:
                                ids.append(event_order(event_id))
                            if message is None:
                                continue  # the priming event
                            methods.append(message.get("method"))
                            if message.get("method") in REPLIES:
                                reply = {
                                    "jsonrpc": "2.0",
                                    "id": message["id"],
                                    "result": REPLIES[message["method"]],
                                }
                                sent = await http.post(
                                    gateway.url, content=json.dumps(reply), headers=headers
                                )
                                assert sent.status_code == 202
                    if "elicitation/create" in methods:
                        break
                    ids, methods = [], []
                    await anyio.sleep(0.2)
            assert ids == sorted(ids), n
            assert methods.count("notifications/progress") == 40
            assert methods[-1] is None  # the answer, last


async def test_the_cases_reach_what_they_name(tmp_path: Path) -> None:
    """The comparison above is only as good as its cases: each does what it says."""
    async with gateways(tmp_path) as both:
        gateway = both["direct"]
        alice = await open_session(gateway)
        old = await open_session(gateway, version="2025-06-18")

        async def case(name: str) -> Answer:
            session, body, changes = CASES[name]
            headers = {"alice": alice, "alice-0618": old}.get(session)
            if headers is None:
                headers = await open_session(gateway, "bob")
            return await session_post(gateway, headers, body, **changes)

        async def said(name: str) -> list[Any]:
            return said_in(await case(name))[2]

        status, same, messages = said_in(await case("a call"))
        assert (status, same) == (200, True)
        assert messages[0]["result"]["structuredContent"] == {"n": 3}
        assert "_meta" not in messages[0]["result"]  # no serverInfo stamp in this era
        messages = await said("progress and logs")
        methods = [message.get("method") for message in messages[:-1]]
        assert methods == ["notifications/progress", "notifications/message"] * 3
        assert messages[-1]["result"]["content"][0]["text"] == "slept"
        messages = await said("out of scope")
        assert "exceeds max 5" in messages[0]["result"]["content"][0]["text"]
        for name in ("denied tool", "granted to no one", "no such tool"):
            error = (await said(name))[0]["error"]
            assert error == {
                "code": -32602,
                "message": f"Unknown tool: {CASES[name][1]['params']['name']}",
            }
        error = (await said("sampling, not declared"))[0]["error"]
        assert error["message"] == "the client does not support sampling"
        listing = (await said("a listing"))[0]["result"]
        names = [tool["name"] for tool in listing["tools"]]
        assert "echo__echo" in names
        assert "echo__crash" not in names
        assert "cacheScope" not in listing  # a 2026-07-28 field
        assert (await case("another caller's session"))[0] == 404
        assert (await case("accepts JSON only"))[0] == 406
        assert (await case("foreign host"))[0] == 421


async def test_the_forms_of_an_answer(tmp_path: Path) -> None:
    """An answer with nothing before it is one JSON response; a call that sends progress
    or logs, or stays silent beyond PRIME_AFTER, gets SSE: a priming event first (from
    2025-11-25), every event with the id it is stored under."""
    async with gateways(tmp_path) as both:
        gateway = both["direct"]
        alice = await open_session(gateway)
        old = await open_session(gateway, version="2025-06-18")
        status, kind, same, events = await session_post(
            gateway, alice, session_call("echo__echo", {"n": 3})
        )
        assert (status, kind, same) == (200, "application/json", True)
        assert events[0][0]["result"]["structuredContent"] == {"n": 3}
        _, kind, _, events = await session_post(gateway, alice, _list({}))
        assert kind == "application/json"
        progress = session_call("echo__sleep", {"seconds": 0.2}, {"progressToken": 1})
        _, kind, same, events = await session_post(gateway, alice, progress)
        assert (kind, same) == ("text/event-stream", True)
        assert events[0] == (None, True)  # the priming event
        assert all(stored for _, stored in events)
        assert len(events) == 6
        _, kind, _, events = await session_post(gateway, old, progress)
        assert kind == "text/event-stream"
        assert events[0][0] is not None  # no priming event before 2025-11-25
        assert all(stored for _, stored in events)
        level = {"jsonrpc": "2.0", "id": 9, "method": "logging/setLevel"}
        await session_post(gateway, alice, {**level, "params": {"level": "error"}})
        silent = session_call("echo__sleep", {"seconds": 1.0})  # no progress, logs below the level
        _, kind, _, events = await session_post(gateway, alice, silent)
        assert kind == "text/event-stream"
        assert [message is None for message, _ in events] == [True, False]
        assert all(stored for _, stored in events)


async def test_ending_the_session_ends_its_calls_alike(tmp_path: Path) -> None:
    """DELETE while a call runs: its stream ends without an answer, and the call is
    cancelled upstream."""
    async with gateways(tmp_path) as both:
        for gateway in both.values():
            headers = await open_session(gateway)
            before = await cancelled(gateway, headers)
            body = session_call("echo__sleep", {"seconds": 10}, {"progressToken": 1})
            seen: list[Any] = []
            async with (
                httpx2.AsyncClient(timeout=20) as http,
                http.stream("POST", gateway.url, content=json.dumps(body), headers=headers) as r,
            ):
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        seen.append(json.loads(line[len("data: ") :]))
                        if len(seen) == 1:  # the call runs: end the session
                            ended = await http.delete(gateway.url, headers=headers)
                            assert ended.status_code == 200
            assert "result" not in seen[-1]
            assert "error" not in seen[-1]
            async with httpx2.AsyncClient(timeout=20) as http:
                gone = await http.post(gateway.url, content=json.dumps(body), headers=headers)
            assert gone.status_code == 404
            fresh = await open_session(gateway)
            for _ in range(200):  # the upstream sees the cancellation soon after
                if await cancelled(gateway, fresh) == before + 1:
                    break
                await anyio.sleep(0.05)
            assert await cancelled(gateway, fresh) == before + 1


async def cancelled(gateway: Gateway, headers: dict[str, str]) -> int:
    """How many calls the echo upstream saw cancelled."""
    events = (await session_post(gateway, headers, session_call("echo__cancelled", {})))[3]
    return int(events[-1][0]["result"]["content"][0]["text"])


async def test_a_call_keeps_its_session_from_going_idle(tmp_path: Path) -> None:
    """A session idle for longer than its timeout is closed, but not while a call runs."""
    with http_echo() as url:
        text = doors_config(url, True).replace(
            "server: {direct_calls: true}",
            "server: {direct_calls: true, session_idle_timeout: 0.5}",
        )
        async with running_gateway(tmp_path, text) as gateway:
            headers = await open_session(gateway)
            long = await session_post(
                gateway, headers, session_call("echo__sleep", {"seconds": 1.2})
            )
            assert long[3][-1][0]["result"]["content"][0]["text"] == "slept"
            after = await session_post(gateway, headers, session_call("echo__echo", {"n": 1}))
            assert after[3][-1][0]["result"]["structuredContent"] == {"n": 1}
            await anyio.sleep(1.0)
            assert (await session_post(gateway, headers, session_call("echo__echo", {"n": 1})))[
                0
            ] == 404


async def test_a_failing_event_store_does_not_cost_the_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The events of a call go unstored (so without ids: not resumable), the call is
    answered all the same."""

    async def failing(*_args: object) -> str:
        raise StateError("the store is down")

    async with gateways(tmp_path) as both:
        headers = await open_session(both["direct"])
        monkeypatch.setattr(MemoryStore, "append", failing)
        body = session_call("echo__sleep", {"seconds": 0.1}, {"progressToken": 1})
        status, kind, _, events = await session_post(both["direct"], headers, body)
    assert (status, kind) == (200, "text/event-stream")
    assert [stored for _, stored in events] == [False, False, False]  # no priming event
    assert events[-1][0]["result"]["content"][0]["text"] == "slept"


async def test_a_cancelled_call_is_answered_alike_and_only_its_owner_cancels(
    tmp_path: Path,
) -> None:
    async with gateways(tmp_path) as both:
        endings = []
        for gateway in both.values():
            alice = await open_session(gateway)
            before = await cancelled(gateway, alice)
            body = session_call("echo__sleep", {"seconds": 1.0}, {"progressToken": 1})
            cancel = {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": body["id"], "reason": "changed my mind"},
            }
            bob = {**alice, "Authorization": f"Bearer {KEYS['bob']}"}
            messages: list[Any] = []
            async with (
                httpx2.AsyncClient(timeout=20) as http,
                http.stream("POST", gateway.url, content=json.dumps(body), headers=alice) as r,
            ):
                async for line in r.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    messages.append(json.loads(line[len("data: ") :]))
                    if len(messages) == 1:  # running: bob cannot cancel it, alice can
                        refused = await http.post(
                            gateway.url, content=json.dumps(cancel), headers=bob
                        )
                        assert refused.status_code == 404
                    if len(messages) == 4:
                        done = await http.post(
                            gateway.url, content=json.dumps(cancel), headers=alice
                        )
                        assert done.status_code == 202
            endings.append(messages[-1])
            assert 5 <= len(messages) < 20  # ended by alice, before the ten steps
            for _ in range(200):  # the upstream sees the cancellation soon after
                if await cancelled(gateway, alice) == before + 1:
                    break
                await anyio.sleep(0.05)
            assert await cancelled(gateway, alice) == before + 1
        assert endings[0] == endings[1]
        assert endings[0]["error"]["code"] == -32800


CANCEL = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}


def _slowed(monkeypatch: pytest.MonkeyPatch, which: Any) -> None:
    """The event store takes a second over the events `which` picks (a store across a
    network), so that something can happen meanwhile."""
    store = SessionEvents.store_wire

    async def slow(self: SessionEvents, stream_id: str, message: Any) -> str | None:
        if which(message):
            await anyio.sleep(1.0)
        return await store(self, stream_id, message)

    monkeypatch.setattr(SessionEvents, "store_wire", slow)


async def _while_calling(
    gateway: Gateway, headers: dict[str, str], body: Any, after: float, then: Any
) -> list[Any]:
    """`body` posted; `then(http)` after `after` seconds; the call's messages."""
    answer: list[Any] = []

    async def call() -> None:
        async with httpx2.AsyncClient(timeout=8) as http:
            sent = await http.post(gateway.url, content=json.dumps(body), headers=headers)
            answer.extend(m for m, _ in sse_events(sent.text) if m is not None)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(call)
        await anyio.sleep(after)
        async with httpx2.AsyncClient(timeout=5) as http:
            await then(http)
    return answer


@pytest.mark.parametrize("how", ["cancel", "delete"])
async def test_a_call_ended_while_its_stream_begins_is_not_left_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """The keepalive starts the SSE stream of a silent call (storing its priming event)
    when the call is cancelled or its session ended: the response still ends."""
    async with gateways(tmp_path) as both:
        gateway = both["direct"]
        headers = await open_session(gateway)
        level = {"jsonrpc": "2.0", "id": 9, "method": "logging/setLevel"}
        assert (await session_post(gateway, headers, {**level, "params": {"level": "error"}}))[
            0
        ] == 200
        _slowed(monkeypatch, lambda message: message is None)

        async def end(http: httpx2.AsyncClient) -> None:
            if how == "cancel":
                ended = await http.post(gateway.url, content=json.dumps(CANCEL), headers=headers)
                assert ended.status_code == 202
            else:
                assert (await http.delete(gateway.url, headers=headers)).status_code == 200

        with anyio.fail_after(7):
            messages = await _while_calling(
                gateway, headers, session_call("echo__sleep", {"seconds": 3}), 0.8, end
            )
    if how == "cancel":
        assert messages == [{"jsonrpc": "2.0", "id": 7, "error": _CANCELLED}]
    else:
        assert messages == []


async def test_a_cancellation_during_the_answer_does_not_cut_it_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the SDK's door: once the answer is being written, it is written."""
    async with gateways(tmp_path) as both:
        endings = []
        for gateway in both.values():
            headers = await open_session(gateway)
            _slowed(monkeypatch, lambda message: message is not None and "id" in message)

            async def cancel(
                http: httpx2.AsyncClient, url: str = gateway.url, headers: dict[str, str] = headers
            ) -> None:
                sent = await http.post(url, content=json.dumps(CANCEL), headers=headers)
                assert sent.status_code == 202

            body = session_call("echo__sleep", {"seconds": 0.2}, {"progressToken": 1})
            messages = await _while_calling(gateway, headers, body, 0.8, cancel)
            monkeypatch.undo()
            endings.append(messages[-1])
    assert endings[0] == endings[1]
    assert endings[0]["result"]["content"][0]["text"] == "slept"


async def test_a_cancellation_the_sdk_refuses_cancels_nothing(tmp_path: Path) -> None:
    """A notifications/cancelled refused for its headers (a foreign Host: 421; no SSE in
    Accept: 406) leaves the call running, at both doors."""
    async with gateways(tmp_path) as both:
        for gateway in both.values():
            headers = await open_session(gateway)

            async def refused(
                http: httpx2.AsyncClient, url: str = gateway.url, headers: dict[str, str] = headers
            ) -> None:
                for changes in ({"Host": "evil.example:80"}, {"Accept": "text/plain"}):
                    sent = await http.post(
                        url, content=json.dumps(CANCEL), headers={**headers, **changes}
                    )
                    assert sent.status_code in (421, 406)

            body = session_call("echo__sleep", {"seconds": 1.0}, {"progressToken": 1})
            messages = await _while_calling(gateway, headers, body, 0.4, refused)
            assert messages[-1]["result"]["content"][0]["text"] == "slept"
