"""run_session talking to its caller during the call, through /mcp: progress as the session
advances (the first report naming the session), its question and its approval put to a
handshake-era caller that declared elicitation, and sessions planned by the caller's own
model through sampling (with tool use, and in text), by real SDK clients."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
import yaml
from mcp.client.session import ClientRequestContext

from tests.engine.helpers import envelope, reply
from tests.engine.test_run_session import ACME_SESSIONS, SCRIPT
from tests.front.harness import GLOBEX, Gateway, gateway_yaml, running_gateway
from tests.front.helpers import audit_events

pytestmark = pytest.mark.anyio

CAREFUL = ACME_SESSIONS.replace(
    '        trusted_output: ["echo__*"]',
    '        trusted_output: ["echo__*"]\n        needs_approval: ["echo__echo"]',
)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def serving(directory: Path, engine: str) -> AsyncIterator[Gateway]:
    config = gateway_yaml() + engine
    async with running_gateway(
        directory, config, {"acme": CAREFUL, "globex": GLOBEX}, own="gateway"
    ) as running:
        yield running


@pytest.fixture(scope="module")
async def scripted(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    directory = tmp_path_factory.mktemp("asks")
    (directory / "script.yaml").write_text(yaml.safe_dump(SCRIPT), encoding="utf-8")
    async with serving(directory, "engine: {planner: scripted, script: script.yaml}\n") as running:
        yield running


@pytest.fixture(scope="module")
async def sampled(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    directory = tmp_path_factory.mktemp("sampled")
    async with serving(directory, "engine: {planner: sampling}\n") as running:
        yield running


class Person:
    """A handshake-era caller's user, answering the gateway's elicitations."""

    def __init__(self, *answers: dict[str, Any]) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def elicit(
        self, _ctx: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestFormParams)
        self.asked.append(params.message)
        return types.ElicitResult(action="accept", content=self.answers.pop(0))


async def test_questions_and_approvals_are_elicited_within_the_call(scripted: Gateway) -> None:
    person = Person({"answer": "four"}, {"decision": "approve"})
    reports: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reports.append(message or "")

    async with scripted.client("alice", "legacy", elicitation_callback=person.elicit) as alice:
        result = await alice.call_tool(
            "gateway__run_session", {"message": "echo"}, progress_callback=on_progress
        )
    done = result.structured_content
    assert done is not None
    assert (done["status"], done["text"]) == ("completed", "Echoed 4."), done
    assert person.asked[0] == "Which number?"
    assert person.asked[1].startswith("May I run echo__echo")
    assert done["calls"] == [{"tool": "echo__echo", "decision": "allowed", "ok": True}]
    assert reports[0] == f"session {done['session_id']} accepted"
    assert "calling echo__echo" in reports
    assert reports[-1] == "session completed"


async def test_a_caller_that_cannot_be_asked_gets_the_question(scripted: Gateway) -> None:
    person = Person({"answer": "four"})
    async with scripted.client("alice", "auto", elicitation_callback=person.elicit) as alice:
        result = await alice.call_tool("gateway__run_session", {"message": "echo"})
    asked = result.structured_content
    assert asked is not None
    assert (asked["status"], asked["text"]) == ("input_required", "Which number?")
    assert person.asked == [], "a 2026-07-28 caller answers by calling again"


async def test_a_declined_elicitation_leaves_the_session_waiting(scripted: Gateway) -> None:
    async def decline(
        _ctx: ClientRequestContext, _params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        return types.ElicitResult(action="decline")

    async with scripted.client("alice", "legacy", elicitation_callback=decline) as alice:
        result = await alice.call_tool("gateway__run_session", {"message": "echo"})
    asked = result.structured_content
    assert asked is not None
    assert (asked["status"], asked["waiting"]) == ("input_required", "question")


class Model:
    """The caller's own model, answering sampling requests from a script, and keeping
    what it was asked."""

    def __init__(self, *answers: dict[str, Any], with_tools: bool) -> None:
        self.answers = list(answers)
        self.with_tools = with_tools
        self.requests: list[types.CreateMessageRequestParams] = []

    async def sample(
        self, _ctx: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.CreateMessageResultWithTools:
        self.requests.append(params)
        data = self.answers.pop(0)
        if self.with_tools:
            block = types.ToolUseContent(
                type="tool_use", id=f"use-{len(self.requests)}", name="emit_envelope", input=data
            )
            return types.CreateMessageResultWithTools(
                role="assistant", content=[block], model="callers-model", stop_reason="toolUse"
            )
        text = types.TextContent(type="text", text=json.dumps(data))
        return types.CreateMessageResult(role="assistant", content=text, model="callers-model")


@pytest.mark.parametrize("with_tools", [True, False], ids=["tool-use", "text"])
async def test_a_session_is_planned_by_the_callers_model(
    sampled: Gateway, with_tools: bool
) -> None:
    model = Model(
        envelope("tool", call={"tool": "echo__pid", "arguments": "{}"}),
        reply("The pid is known."),
        with_tools=with_tools,
    )
    capabilities = types.SamplingCapability(
        tools=types.SamplingToolsCapability() if with_tools else None
    )
    async with sampled.client(
        "alice", "legacy", sampling_callback=model.sample, sampling_capabilities=capabilities
    ) as alice:
        result = await alice.call_tool("gateway__run_session", {"message": "what is the pid?"})
    done = result.structured_content
    assert done is not None
    assert (done["status"], done["text"]) == ("completed", "The pid is known."), done
    assert done["calls"] == [{"tool": "echo__pid", "decision": "allowed", "ok": True}]
    first, second = model.requests
    assert first.system_prompt is not None
    assert "You help customers." in first.system_prompt  # the caller's tag prompt
    assert "- echo__pid" in first.system_prompt  # a permitted tool
    assert "echo__crash" not in first.system_prompt  # a denied one is not shown
    if with_tools:
        assert [t.name for t in first.tools or []] == ["emit_envelope"]
        assert first.tool_choice is not None
        assert first.tool_choice.mode == "required"
        told = second.messages[-1].content
        assert isinstance(told, types.ToolResultContent)
        assert told.tool_use_id == "use-1"
    else:
        assert first.tools is None
        assert "as a single JSON object" in first.system_prompt
        told = second.messages[-1].content
        assert isinstance(told, types.TextContent)
        assert "echo__pid returned a result" in told.text


async def test_a_caller_without_sampling_is_told_how_sessions_are_planned(sampled: Gateway) -> None:
    async with sampled.client("alice", "legacy") as alice:
        result = await alice.call_tool("gateway__run_session", {"message": "hi"})
    assert result.is_error
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    assert "did not declare sampling" in block.text


NESTING = [
    envelope("tool", call={"tool": "gateway__run_session", "arguments": '{"message": "go on"}'}),
    reply("done"),
]


@pytest.fixture(scope="module")
async def nesting(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    directory = tmp_path_factory.mktemp("nesting")
    (directory / "nest.yaml").write_text(yaml.safe_dump(NESTING), encoding="utf-8")
    engine = "engine: {planner: scripted, script: nest.yaml, nested_depth: 1}\n"
    async with serving(directory, engine) as running:
        yield running


async def test_a_session_starts_sessions_only_as_deep_as_configured(nesting: Gateway) -> None:
    """Depth 1: the session a caller starts may start one; that one may not."""
    async with nesting.client("alice") as alice:
        result = await alice.call_tool("gateway__run_session", {"message": "start"})
    done = result.structured_content
    assert done is not None
    assert (done["status"], done["text"]) == ("completed", "done"), done
    assert done["calls"] == [{"tool": "gateway__run_session", "decision": "allowed", "ok": True}]
    events = audit_events(nesting)
    sessions = [
        (e["tool"], e["decision"]) for e in events if e.get("tool") == "gateway__run_session"
    ]
    assert sessions[-3:] == [
        ("gateway__run_session", "nested_session"),  # the child's own try: refused
        ("gateway__run_session", "allowed"),  # the parent's call of it
        ("gateway__run_session", "allowed"),  # the caller's call
    ]


@pytest.mark.parametrize(
    "answer", ["z" * 20_001, "\ud800"], ids=["longer-than-a-message", "lone-surrogate"]
)
async def test_an_elicited_answer_no_message_could_carry_is_not_taken(answer: str) -> None:
    """What the caller answers by elicitation is held to what a `message` may be: the
    session goes on waiting, with the question as the result."""
    from gateway.engine.caller import ask
    from gateway.engine.loop import SessionResult
    from gateway.engine.states import SessionState

    class Answering:
        async def create_message(self, _params: Any) -> Any:
            raise AssertionError("not asked")

        async def elicit(self, _params: types.ElicitRequestParams) -> types.ElicitResult:
            return types.ElicitResult(action="accept", content={"answer": answer})

    waiting = SessionResult("s_x", SessionState.INPUT_REQUIRED, "Which?", (), {}, "question")
    assert await ask(Answering(), waiting) is None
