"""run_session through /mcp: the engine as the gateway's own tool, listed only to callers
granted it, run as the caller the gateway authenticated, in both protocol eras; a
question answered by calling again with the session id; the session's calls audited."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import mcp_types as types
import pytest
import yaml

from tests.engine.helpers import envelope, reply, tool
from tests.front.harness import ACME, GLOBEX, Gateway, gateway_yaml, running_gateway
from tests.front.helpers import MODES, audit_events

pytestmark = pytest.mark.anyio

ACME_SESSIONS = ACME.replace(
    'allowed_tools: ["echo__*"]', 'allowed_tools: ["echo__*", "gateway__run_session"]'
).replace(
    '        denied_tools: ["echo__crash"]',
    '        denied_tools: ["echo__crash"]\n        trusted_output: ["echo__*"]',
)
assert ACME_SESSIONS.count("gateway__run_session") == 1

SCRIPT = [
    envelope("clarify", question="Which number?"),
    tool("echo__echo", n=4),
    reply("Echoed 4."),
]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    directory = tmp_path_factory.mktemp("sessions")
    (directory / "script.yaml").write_text(yaml.safe_dump(SCRIPT), encoding="utf-8")
    config = gateway_yaml() + "engine: {planner: scripted, script: script.yaml}\n"
    async with running_gateway(
        directory, config, {"acme": ACME_SESSIONS, "globex": GLOBEX}, own="gateway"
    ) as running:
        yield running


def structured(result: Any) -> dict[str, Any]:
    assert result.structured_content is not None, result
    data: dict[str, Any] = result.structured_content
    return data


@pytest.mark.parametrize("mode", MODES)
async def test_run_session_is_listed_only_to_callers_granted_it(
    gateway: Gateway, mode: str
) -> None:
    async with gateway.client("alice", mode) as alice:
        alices = {t.name for t in (await alice.list_tools()).tools}
    async with gateway.client("bob", mode) as bob:
        bobs = {t.name for t in (await bob.list_tools()).tools}
    assert "gateway__run_session" in alices
    assert "gateway__run_session" not in bobs


@pytest.mark.parametrize("mode", MODES)
async def test_a_session_asks_then_goes_on_when_called_again(gateway: Gateway, mode: str) -> None:
    async with gateway.client("alice", mode) as alice:
        asked = structured(await alice.call_tool("gateway__run_session", {"message": "echo"}))
        assert (asked["status"], asked["text"]) == ("input_required", "Which number?")
        done = structured(
            await alice.call_tool(
                "gateway__run_session", {"session_id": asked["session_id"], "message": "four"}
            )
        )
    assert (done["status"], done["text"]) == ("completed", "Echoed 4.")
    assert done["calls"] == [{"tool": "echo__echo", "decision": "allowed", "ok": True}]
    assert done["spent"]["turns"] == 3
    events = audit_events(gateway)
    session_calls = [e for e in events if e.get("tool") in ("gateway__run_session", "echo__echo")]
    assert [(e["tool"], e["user"]) for e in session_calls[-3:]] == [
        ("gateway__run_session", "alice"),
        ("echo__echo", "alice"),  # the session's call, as alice, audited like any other
        ("gateway__run_session", "alice"),
    ]


async def test_another_caller_cannot_go_on_with_a_session(gateway: Gateway) -> None:
    async with gateway.client("alice") as alice:
        asked = structured(await alice.call_tool("gateway__run_session", {"message": "echo"}))
    async with gateway.client("carol") as carol:  # globex's, not granted run_session
        with pytest.raises(Exception, match="Unknown tool"):
            await carol.call_tool(
                "gateway__run_session", {"session_id": asked["session_id"], "message": "x"}
            )


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        ({"session_id": "s_nope", "message": "x"}, "run_session: no session 's_nope'"),
        ({}, "run_session: a new session needs a message"),
        ({"session_id": "s_nope"}, "run_session: no session 's_nope'"),
    ],
)
async def test_a_call_run_session_cannot_act_on_is_a_tool_error(
    gateway: Gateway, arguments: dict[str, Any], said: str
) -> None:
    async with gateway.client("alice") as alice:
        result = await alice.call_tool("gateway__run_session", arguments)
    assert result.is_error
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    assert block.text.startswith(said), block.text


async def test_an_answer_to_a_question_already_answered_is_refused(gateway: Gateway) -> None:
    async with gateway.client("alice") as alice:
        asked = structured(await alice.call_tool("gateway__run_session", {"message": "echo"}))
        again = {"session_id": asked["session_id"], "message": "four"}
        done = structured(await alice.call_tool("gateway__run_session", again))
        late = await alice.call_tool("gateway__run_session", again)
    assert done["status"] == "completed"
    assert late.is_error
    block = late.content[0]
    assert isinstance(block, types.TextContent)
    assert "is completed: it is not waiting for this" in block.text


async def test_an_answer_for_an_earlier_step_is_refused(gateway: Gateway) -> None:
    """The step the result gave goes back with the answer: a client that answers what it
    was shown is refused once another client has answered it."""
    async with gateway.client("alice") as alice:
        asked = structured(await alice.call_tool("gateway__run_session", {"message": "echo"}))
        assert asked["step"]
        stale = {"session_id": asked["session_id"], "message": "four", "step": "0-1"}
        refused = await alice.call_tool("gateway__run_session", stale)
        fresh = {**stale, "step": asked["step"]}
        done = structured(await alice.call_tool("gateway__run_session", fresh))
    assert refused.is_error
    block = refused.content[0]
    assert isinstance(block, types.TextContent)
    assert "already answered" in block.text
    assert done["status"] == "completed"
