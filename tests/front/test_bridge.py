"""A 2026-07-28 caller is asked a handshake-era upstream's questions (sampling,
elicitation) as input requests, and answers them by calling again: the upstream's call
waits meanwhile, and only the caller asked can continue it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import MCPError
from mcp.client.session import ClientRequestContext

from gateway.front import bridge as bridge_module
from gateway.principal import Principal
from tests.front.harness import ACME, GLOBEX, gateway_yaml, running_gateway
from tests.front.helpers import model
from tests.helpers import until
from tests.upstreams.helpers import EVERYTHING, text

pytestmark = pytest.mark.anyio

HANDSHAKE = gateway_yaml().replace("echo, stdio]", "echo, stdio-handshake]")


def door(direct: bool) -> str:
    """The gateway's own door for 2026-07-28 calls (modern_calls.py), or the SDK's."""
    return HANDSHAKE if direct else f"server: {{direct_calls: false}}\n{HANDSHAKE}"


@pytest.mark.parametrize("direct", [True, False])
async def test_a_2026_caller_answers_a_handshake_upstreams_questions(
    tmp_path: Path, direct: bool
) -> None:
    async def sure(
        _ctx: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestFormParams)
        assert params.message == "Sure?"
        return types.ElicitResult(action="accept", content={"ok": True})

    results: dict[str, str] = {}
    async with (
        running_gateway(tmp_path, door(direct)) as gateway,
        gateway.client("alice", "auto", sampling_callback=model("first")) as first,
        gateway.client("alice", "auto", sampling_callback=model("second")) as second,
        gateway.client("alice", "auto", elicitation_callback=sure) as third,
    ):
        assert first.protocol_version == "2026-07-28"
        for client in (first, second, third):
            await client.list_tools()

        async def call(name: str, client: Any, tool: str, arguments: dict[str, Any]) -> None:
            results[name] = text(await client.call_tool(tool, arguments))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(call, "first", first, "echo__ask", {"prompt": "one"})
            tasks.start_soon(call, "second", second, "echo__ask", {"prompt": "two"})
            tasks.start_soon(call, "third", third, "echo__confirm", {})
    assert results == {
        "first": "model said: first heard 'one'",
        "second": "model said: second heard 'two'",
        "third": "accept {'ok': True}",
    }


async def asked(client: Any, tool: str = "echo__ask") -> types.InputRequiredResult:
    first = await client.session.call_tool(tool, {"prompt": "hi"}, allow_input_required=True)
    assert isinstance(first, types.InputRequiredResult)
    return first


ANSWER = types.CreateMessageResult(
    role="assistant", model="m", content=types.TextContent(type="text", text="yes")
)


async def answer(client: Any, question: types.InputRequiredResult) -> Any:
    """The caller's retry of `asked`'s call, answering its one question."""
    (key,) = question.input_requests or {}
    return await client.session.call_tool(
        "echo__ask",
        {"prompt": "hi"},
        input_responses={key: ANSWER},
        request_state=question.request_state,
    )


async def test_only_the_caller_asked_can_continue_the_call(tmp_path: Path) -> None:
    async with (
        running_gateway(tmp_path, HANDSHAKE) as gateway,
        gateway.client("alice", "auto", sampling_callback=model("m")) as alice,
        gateway.client("bob", "auto", sampling_callback=model("m")) as bob,
        gateway.client("alice", "auto", sampling_callback=model("m")) as again,
    ):
        for client in (alice, bob, again):
            await client.list_tools()
        question = await asked(alice)
        (key,) = question.input_requests or {}
        state = question.request_state
        assert state is not None
        assert state.startswith("gateway-asks.")
        assert len(state) > 40  # a random token, not a counter
        # Another principal presenting the token is refused, and the call still waits.
        with pytest.raises(MCPError, match="requestState is unknown or expired"):
            await bob.session.call_tool(
                "echo__pid", {}, input_responses={key: ANSWER}, request_state=state
            )
        # A guessed token is refused too: nothing runs again.
        with pytest.raises(MCPError, match="requestState is unknown or expired"):
            await again.session.call_tool(
                "echo__ask",
                {"prompt": "hi"},
                input_responses={key: ANSWER},
                request_state="gateway-asks.guessed",
            )
        # The caller's retry, on another connection, continues the waiting call.
        done = await again.session.call_tool(
            "echo__ask", {"prompt": "hi"}, input_responses={key: ANSWER}, request_state=state
        )
        assert text(done) == "model said: yes"
        # A token is spent once used.
        with pytest.raises(MCPError, match="requestState is unknown or expired"):
            await alice.session.call_tool(
                "echo__ask", {"prompt": "hi"}, input_responses={key: ANSWER}, request_state=state
            )


async def test_an_unanswered_question_ends_the_call_within_its_bound(tmp_path: Path) -> None:
    async with (
        running_gateway(tmp_path, HANDSHAKE) as gateway,
        gateway.client("alice", "auto", sampling_callback=model("m")) as alice,
    ):
        gateway.app.state.front.bridge._answer_timeout = 0.3
        await alice.list_tools()
        question = await asked(alice)
        await anyio.sleep(0.6)  # past the bound: the upstream was told, the token withdrawn
        with pytest.raises(MCPError, match="requestState is unknown or expired"):
            await answer(alice, question)
        # The upstream's call ended (with the caller's silence as its answer): others go on.
        assert text(await alice.call_tool("echo__echo", {"n": 1})) == "[('n', 1)]"


async def test_closing_a_request_that_waits_cancels_the_bridged_call(tmp_path: Path) -> None:
    async with (
        running_gateway(tmp_path, HANDSHAKE) as gateway,
        gateway.client("alice", "auto", sampling_callback=model("m")) as alice,
    ):
        await alice.list_tools()
        with anyio.move_on_after(0.5):
            await alice.call_tool("echo__sleep", {"seconds": 5})
        # The call's end is audited (within 50 ms of it): cancelled, not left running.
        audit = gateway.config.audit_path
        ended: list[str] = []
        for _ in range(100):
            lines = audit.read_text().splitlines() if audit.exists() else []
            ended = [
                event.get("ended", "")
                for event in map(json.loads, lines)
                if event.get("tool") == "echo__sleep"
            ]
            if ended:
                break
            await anyio.sleep(0.05)
    assert ended == ["cancelled"]


async def test_server_everythings_sampling_reaches_a_2026_caller(tmp_path: Path) -> None:
    """The issue's case: npm server-everything (handshake era) asks during
    `trigger-sampling-request`; a 2026-07-28 caller answers as a 2026-07-28 client does."""
    node = shutil.which("node")
    if node is None or not (EVERYTHING / "dist/index.js").is_file():
        pytest.skip("node or server-everything missing (scripts/ensure-upstreams installs it)")
    config = gateway_yaml() + (
        f"  everything: {{transport: stdio, command: {node}, "
        f"args: ['{EVERYTHING / 'dist/index.js'}', stdio], prefix: ev__}}\n"
    )
    orgs = {
        "acme": ACME.replace('allowed_tools: ["echo__*"]', 'allowed_tools: ["echo__*", "ev__*"]'),
        "globex": GLOBEX,
    }
    async with (
        running_gateway(tmp_path, config, orgs) as gateway,
        gateway.client("alice", "auto", sampling_callback=model("m")) as alice,
    ):
        assert alice.protocol_version == "2026-07-28"
        names = {tool.name for tool in (await alice.list_tools()).tools}
        assert "ev__trigger-sampling-request" in names
        result = await alice.call_tool("ev__trigger-sampling-request", {"prompt": "hi"})
    said = text(result)
    assert said.startswith("LLM sampling result:")
    assert "m heard 'Resource trigger-sampling-request context: hi'" in said


async def test_one_caller_cannot_pile_up_questions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bridge_module, "MAX_OPEN_QUESTIONS", 1)
    async with (
        running_gateway(tmp_path, HANDSHAKE) as gateway,
        gateway.client("alice", "auto", sampling_callback=model("m")) as alice,
    ):
        await alice.list_tools()
        question = await asked(alice)
        # Alice's next question is refused to the upstream, which says so.
        second = await alice.session.call_tool(
            "echo__ask", {"prompt": "again"}, allow_input_required=True
        )
        assert isinstance(second, types.CallToolResult)
        assert text(second) == (
            "model said: refused: the caller has 1 questions waiting for its answers already"
        )
        (key,) = question.input_requests or {}
        done = await alice.session.call_tool(
            "echo__ask",
            {"prompt": "hi"},
            input_responses={key: ANSWER},
            request_state=question.request_state,
        )
        assert text(done) == "model said: yes"


async def test_a_waiting_call_its_caller_may_no_longer_make_is_ended(tmp_path: Path) -> None:
    # The retry is checked again: a tag changed while the question waited stops the call.
    async with (
        running_gateway(tmp_path, HANDSHAKE) as gateway,
        gateway.client("alice", "auto", sampling_callback=model("m")) as alice,
    ):
        await alice.list_tools()
        question = await asked(alice)
        views = gateway.app.state.front.views
        before = views.context(Principal("alice", "acme")).version
        denied = ACME.replace('denied_tools: ["echo__crash"]', 'denied_tools: ["echo__ask"]')
        gateway.write_org("acme", denied)
        for _ in range(100):  # the reload is picked up within a second or two
            if views.context(Principal("alice", "acme")).version != before:
                break
            await anyio.sleep(0.05)
        with pytest.raises(MCPError, match="Unknown tool: echo__ask"):
            await answer(alice, question)
        with pytest.raises(MCPError, match="requestState is unknown or expired"):
            await answer(alice, question)
    audit = (tmp_path / ".gateway" / "audit.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in audit]
    decisions = [e.get("decision") for e in events if e.get("tool") == "echo__ask"]
    assert "denied" in decisions  # the retry; the waiting call's own record says cancelled
    assert any(e.get("ended") == "cancelled" for e in events if e.get("tool") == "echo__ask")


async def test_a_callers_silence_never_counts_against_the_upstream(tmp_path: Path) -> None:
    # The question is given up before the call's call_timeout: the upstream is told, and
    # answers; it did not fail, so its breaker counts nothing, whoever stays silent.
    # Nothing here waits on the clock: the calls' ends are awaited as their audit records,
    # and each call has its own session at once. The one timing left is the product's own:
    # the upstream answers within the margin it is given (a call_timeout of 8 s gives it
    # the whole ANSWER_MARGIN, 2 s, where 2 s gave it 0.5 s and left each call's own
    # session, an upstream process started on demand, 2 s to start on a busy machine).
    config = HANDSHAKE.replace(
        "call_timeout: 10", "call_timeout: 8\n    caller_sessions_per_user: 5"
    )
    async with (
        running_gateway(tmp_path, config) as gateway,
        gateway.client("alice", "auto", sampling_callback=model("m")) as alice,
    ):
        await alice.list_tools()
        connection = gateway.app.state.front.pool.connections["echo"]
        threshold = connection.breaker.threshold
        # Alice's silent calls never wait for one another's session (and its hold).
        assert connection.config.caller_sessions_per_user >= threshold
        for _ in range(threshold):
            await asked(alice)
        audit = gateway.app.state.runtime.audit

        def ended() -> list[Any]:
            return [e.get("ended") for e in audit.read() if e.get("tool") == "echo__ask"]

        await until(lambda: len(ended()) == threshold, 60)  # every call is over
        assert ended() == ["ok"] * threshold  # the upstream answered: none timed out
        assert connection.breaker.failures == 0
        assert text(await alice.call_tool("echo__echo", {"n": 1})) == "[('n', 1)]"
