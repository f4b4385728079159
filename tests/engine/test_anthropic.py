"""The Anthropic planner: the real `anthropic` SDK against a local fake of the Messages
API, driving sessions through the engine with a real echo upstream."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.engine.loop import SessionResult
from gateway.engine.planners.anthropic import AnthropicPlanner
from gateway.engine.settings import AnthropicSettings, Prices
from gateway.engine.states import SessionState
from gateway.errors import ConfigError
from tests.engine.fake_anthropic import Reply, fake_messages
from tests.engine.helpers import Bench, envelope, reply, tool

pytestmark = pytest.mark.anyio

KEY_ENV = "GATEWAY_TEST_ANTHROPIC_KEY"


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test-not-a-real-key")
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)


async def session_on(bench: Bench, url: str | None, **fields: Any) -> SessionResult:
    """A session of the bench's, planned through the Messages API at `url`."""
    planner = AnthropicPlanner(settings(url, **fields))
    try:
        return await bench.session(planner)
    finally:
        await planner.aclose()


def settings(url: str | None, **fields: Any) -> AnthropicSettings:
    return AnthropicSettings.model_validate(
        {"api_key_env": KEY_ENV, "base_url": url, "max_retries": 2, "timeout": 5, **fields}
    )


async def test_a_session_through_the_messages_api(bench: Bench) -> None:
    async with fake_messages([Reply(tool("echo__echo", n=2)), Reply(reply("two"))]) as fake:
        result = await session_on(bench, fake.url, prices=Prices(input=3, output=15))
    assert (result.state, result.text) == (SessionState.COMPLETED, "two")
    first, second = fake.requests
    # One forced tool, strict, with the envelope's schema; no upstream tool is an API tool.
    assert [t["name"] for t in first["tools"]] == ["emit_envelope"]
    assert first["tools"][0]["strict"] is True
    assert first["tool_choice"] == {
        "type": "tool",
        "name": "emit_envelope",
        "disable_parallel_tool_use": True,
    }
    system = "\n".join(block["text"] for block in first["system"])
    assert "You help customers." in system  # the caller's tag prompt
    assert "- echo__echo" in system
    assert "echo__crash" not in system  # denied
    assert "echo__lookup" not in system  # not granted
    assert first["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert first["system"] == second["system"]  # the stable prefix, byte for byte
    # The history: the tool use answered by its result, newest block cached.
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
    used = second["messages"][1]["content"][0]
    told = second["messages"][2]["content"][-1]
    assert (used["type"], used["name"]) == ("tool_use", "emit_envelope")
    assert (told["type"], told["tool_use_id"]) == ("tool_result", used["id"])
    assert "[('n', 2)]" in told["content"]
    assert told["cache_control"] == {"type": "ephemeral"}
    sent = fake.headers[0]  # the key from the variable gateway.yaml names
    assert "sk-test-not-a-real-key" in (sent.get("x-api-key", "") + sent.get("authorization", ""))
    # Usage per turn, and its cost by the price table.
    events = await bench.events(result.session_id)
    usages = [e["usage"] for e in events if e["type"] == "envelope"]
    assert usages[0] == {
        "input_tokens": 1200,
        "output_tokens": 80,
        "cache_read_tokens": 1000,
        "cache_write_tokens": 0,
        "cost_usd": pytest.approx((1200 * 3 + 80 * 15) / 1e6),
    }
    assert result.spent["cost_usd"] == pytest.approx(2 * (1200 * 3 + 80 * 15) / 1e6)


@pytest.mark.parametrize(
    "data",
    [
        envelope("tools", mode="parallel", calls=[{"tool": "echo__echo", "arguments": "{}"}]),
        envelope(
            "plan",
            goal="g",
            steps=[{"id": "a", "tool": "echo__echo", "arguments": json.dumps({"n": 1})}],
        ),
        envelope("clarify", question="Which one?"),
        envelope("error", reason="cannot"),
    ],
    ids=lambda data: data["kind"],
)
async def test_every_kind_comes_through(bench: Bench, data: dict[str, Any]) -> None:
    async with fake_messages([Reply(data), Reply(reply())]) as fake:
        result = await session_on(bench, fake.url)
    expected = {
        "tools": SessionState.COMPLETED,
        "plan": SessionState.COMPLETED,
        "clarify": SessionState.INPUT_REQUIRED,
        "error": SessionState.FAILED,
    }[data["kind"]]
    assert result.state is expected


async def test_an_invalid_envelope_and_a_text_answer_get_repair_turns(bench: Bench) -> None:
    replies = [Reply({"kind": "reply"}), Reply(text="I think I will just chat."), Reply(reply())]
    async with fake_messages(replies) as fake:
        result = await session_on(bench, fake.url)
    assert result.state is SessionState.COMPLETED
    second, third = fake.requests[1], fake.requests[2]
    repair = second["messages"][-1]["content"][-1]
    assert repair["type"] == "tool_result"
    assert repair["is_error"] is True
    assert "reply.text: Field required" in repair["content"]
    # A text answer has no tool use to answer: it is told as text.
    assert third["messages"][-2]["content"][-1] == {
        "type": "text",
        "text": "I think I will just chat.",
    }
    assert third["messages"][-1]["content"][-1]["type"] == "text"


@pytest.mark.parametrize("status", [429, 529, 500])
async def test_the_sdks_own_retries_carry_a_turn_over_a_failure(bench: Bench, status: int) -> None:
    replies = [Reply(status=status, headers={"retry-after": "0"}), Reply(reply("after all"))]
    async with fake_messages(replies) as fake:
        result = await session_on(bench, fake.url)
    assert (result.state, result.text) == (SessionState.COMPLETED, "after all")
    assert len(fake.requests) == 2


async def test_failures_past_the_retries_fail_the_session_saying_so(bench: Bench) -> None:
    replies = [Reply(status=529, headers={"retry-after": "0"})] * 3
    async with fake_messages(replies) as fake:
        result = await session_on(bench, fake.url, max_retries=2)
    assert result.state is SessionState.FAILED
    assert result.text is not None
    assert result.text.startswith("the planner failed: the Messages API answered 529")
    assert len(fake.requests) == 3


async def test_an_answer_slower_than_the_timeout_fails_the_turn(bench: Bench) -> None:
    async with fake_messages([Reply(reply(), delay=3)]) as fake:
        result = await session_on(bench, fake.url, timeout=0.5, max_retries=0)
    assert result.state is SessionState.FAILED
    assert result.text == "the planner failed: the Messages API did not answer within 0.5 s"


async def test_anthropic_base_url_is_honoured(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with fake_messages([Reply(reply("from the environment"))]) as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        result = await session_on(bench, None)
    assert result.text == "from the environment"
    assert len(fake.requests) == 1


def test_a_missing_key_is_a_configuration_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ConfigError, match=rf"needs an API key in \${KEY_ENV}"):
        AnthropicPlanner(settings("http://127.0.0.1:9"))
