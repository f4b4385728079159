"""A session per caller for an upstream that cannot say whose its messages are: the echo
server over stdio in the handshake era (as an SDK 1.x server would be)."""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
import pytest

from gateway.errors import UpstreamError
from gateway.upstreams import sessions
from gateway.upstreams.connection import UpstreamConnection
from gateway.upstreams.relay import ElicitationAnswer, SamplingAnswer
from tests.helpers import gone, until
from tests.upstreams.helpers import ECHO, running, stdio, text

pytestmark = pytest.mark.anyio


def handshake(**fields: Any) -> Any:
    return stdio(args=[*ECHO, "stdio-handshake"], **fields)


class Model:
    """A caller's model: answers sampling with its own name."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def create_message(self, params: types.CreateMessageRequestParams) -> SamplingAnswer:
        await anyio.sleep(0.2)  # both questions are out at once
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=self.name), model="m"
        )

    async def elicit(self, params: types.ElicitRequestParams) -> ElicitationAnswer:
        return types.ElicitResult(action="decline")


async def ready(up: UpstreamConnection) -> UpstreamConnection:
    with anyio.fail_after(20):
        await up.wait_ready()
    return up


async def test_two_callers_each_get_their_own_logs_and_questions() -> None:
    logs: dict[str, list[Any]] = {"alice": [], "bob": []}
    answers: dict[str, str] = {}
    async with running(UpstreamConnection("old", handshake())) as up:
        await ready(up)
        assert up.caller_sessions == 0

        async def sleeper(who: str) -> None:
            async def on_log(params: types.LoggingMessageNotificationParams) -> None:
                logs[who].append(params.data)

            await up.call_tool("sleep", {"seconds": 0.3}, on_log=on_log, owner=who)

        async def asker(who: str) -> None:
            result = await up.call_tool("ask", {}, asker=Model(who), owner=who)
            answers[who] = text(result)

        async with anyio.create_task_group() as tasks:
            for who in ("alice", "bob"):
                tasks.start_soon(sleeper, who)
                tasks.start_soon(asker, who)
        assert up.caller_sessions == 1  # bob's, while alice had the gateway's own
    assert logs == {
        "alice": [{"step": n} for n in (1, 2, 3)],
        "bob": [{"step": n} for n in (1, 2, 3)],
    }
    assert answers == {"alice": "model said: alice", "bob": "model said: bob"}


async def test_calls_of_one_caller_share_its_session() -> None:
    async with running(UpstreamConnection("old", handshake())) as up:
        await ready(up)
        async with anyio.create_task_group() as tasks:
            for _ in range(3):
                tasks.start_soon(lambda: up.call_tool("sleep", {"seconds": 0.2}, owner="alice"))
        assert up.caller_sessions == 0


async def test_a_callers_session_is_its_own_process_and_closes_when_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sessions, "IDLE", 0.3)
    pids: dict[str, int] = {}
    async with running(UpstreamConnection("old", handshake())) as up:
        await ready(up)

        async def hold() -> None:
            await up.call_tool("sleep", {"seconds": 0.5}, owner="alice")

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(hold)
            await anyio.sleep(0.1)  # alice holds the gateway's own session
            pids["bob"] = int(text(await up.call_tool("pid", {}, owner="bob")))
        pids["alice"] = int(text(await up.call_tool("pid", {}, owner="alice")))
        assert pids["alice"] != pids["bob"]
        await until(lambda: up.caller_sessions == 0, 5)
        await until(lambda: gone(pids["bob"]), 5)


async def test_beyond_the_limit_calls_wait_for_a_free_session() -> None:
    config = handshake(caller_sessions=1, call_timeout=8)
    async with running(UpstreamConnection("old", config)) as up:
        await ready(up)
        done: list[str] = []

        async def call(who: str) -> None:
            await up.call_tool("sleep", {"seconds": 0.3}, owner=who)
            done.append(who)

        async with anyio.create_task_group() as tasks:
            for who in ("alice", "bob", "carol", "dave"):  # two of them wait
                tasks.start_soon(call, who)
                await anyio.sleep(0.05)
        assert sorted(done) == ["alice", "bob", "carol", "dave"]
        assert up.caller_sessions == 1


async def test_one_users_parallel_calls_leave_sessions_for_other_users(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three calls of alice's (three owners, as a 2026-07-28 client's calls are) and one
    of bob's, on an upstream of three sessions of which a user may hold two: bob gets
    the third at once, and alice's third call waits for one of her own (its hold, made
    long here, included). Without the cap alice would take all three and bob would wait."""
    monkeypatch.setattr(sessions, "HOLD", 3.0)
    config = handshake(caller_sessions=2, caller_sessions_per_user=2, call_timeout=30)
    async with running(UpstreamConnection("old", config)) as up:
        await ready(up)
        done: list[str] = []

        async def call(owner: str, user: str) -> None:
            await up.call_tool("sleep", {"seconds": 0.5}, owner=owner, user=user)
            done.append(owner)

        async with anyio.create_task_group() as tasks:
            for n in (1, 2, 3):
                tasks.start_soon(call, f"alice-{n}", "alice")
                await anyio.sleep(0.05)
            await anyio.sleep(0.1)
            tasks.start_soon(call, "bob-1", "bob")
        assert done.index("bob-1") < done.index("alice-3"), done
        assert up.caller_sessions == 2  # one of alice's, one of bob's


async def test_a_call_past_its_users_cap_fails_in_time_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sessions, "HOLD", 30.0)
    config = handshake(caller_sessions=3, caller_sessions_per_user=1, call_timeout=2)
    async with running(UpstreamConnection("old", config)) as up:
        await ready(up)
        await up.call_tool("pid", {}, owner="alice-1", user="alice")  # held long after
        with pytest.raises(UpstreamError, match="the 1 sessions that one user's calls"):
            await up.call_tool("pid", {}, owner="alice-2", user="alice")
        await up.call_tool("pid", {}, owner="alice-1", user="alice")  # its own: no new one
        assert up.caller_sessions == 0


async def test_a_session_is_not_lent_on_while_an_abandoned_call_may_still_talk() -> None:
    """Alice gives up on a call whose handler goes on logging a moment: Bob, calling next,
    gets a session of his own and only his own logs."""
    logs: list[Any] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async with running(UpstreamConnection("old", handshake())) as up:
        await ready(up)
        with anyio.move_on_after(0.25):
            await up.call_tool("sleep", {"seconds": 0.4}, owner="alice")
        await up.call_tool("sleep", {"seconds": 0.3}, on_log=on_log, owner="bob")
        assert up.caller_sessions == 1
    assert logs == [{"step": n} for n in (1, 2, 3)]


async def test_without_caller_sessions_a_message_of_two_callers_is_not_guessed() -> None:
    logs: list[Any] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async with running(UpstreamConnection("old", handshake(caller_sessions=0))) as up:
        await ready(up)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(
                lambda: up.call_tool("sleep", {"seconds": 0.3}, on_log=on_log, owner="alice")
            )
            tasks.start_soon(lambda: up.call_tool("sleep", {"seconds": 0.5}, owner="bob"))
        assert up.caller_sessions == 0
    assert logs == []
