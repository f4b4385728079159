"""A planner on the Anthropic Messages API, through the official SDK's async client.

Each turn is one `messages.create` with a single tool, `emit_envelope`, forced by name
(parallel tool use off), whose input schema is the envelope's in the API's strict subset
(`anthropic.transform_schema`). The permitted tools are not API tools: they are described
in the system prompt, after the caller's assembled tag prompt, in a stable order, framed
as untrusted data (a description is the upstream's text). That prefix (the tool, then the
system blocks) is byte-for-byte the same every turn and carries the first cache
breakpoint; the newest message carries the second, so a session's history is read from
the cache too.

Model, max tokens, timeout and retries come from gateway.yaml and go to the SDK's own
options (its retries honour `retry-after`); the API key from the environment variable
gateway.yaml names; `ANTHROPIC_BASE_URL` is honoured by the SDK. This module imports the
SDK, some 42 MB: the engine imports it only when this planner is configured.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Final, cast

import anthropic

from ...errors import ConfigError, ConfigIssue
from ..envelopes import envelope_schema
from ..settings import AnthropicSettings, Prices
from .base import Answer, Emitted, Entry, Planner, PlannerError, Said, Told, Turn, Usage
from .prompt import PREAMBLE, TOOL_NAME, tools_text

NO_TOOL_USE: Final = "text-"
"""The id prefix of an answer that was no tool use (told back as text, not a tool result)."""


class AnthropicPlanner(Planner):
    name = "anthropic"

    def __init__(self, settings: AnthropicSettings, where: str = "gateway.yaml") -> None:
        key = os.environ.get(settings.api_key_env)
        if not key:
            problem = (
                f"the anthropic planner needs an API key in ${settings.api_key_env} "
                "(engine.anthropic.api_key_env names the variable)"
            )
            raise ConfigError([ConfigIssue(where, problem, field="engine.anthropic")])
        self.settings = settings
        self._client = anthropic.AsyncAnthropic(
            api_key=key,
            base_url=settings.base_url,
            timeout=settings.timeout,
            max_retries=settings.max_retries,
        )
        self._tool: dict[str, Any] = {
            "name": TOOL_NAME,
            "description": "Answer this turn with one envelope.",
            "input_schema": anthropic.transform_schema(envelope_schema()),
            "strict": True,
        }
        self._turns = 0
        # Descriptions are framed by a delimiter they cannot know (and so cannot close),
        # the same for every turn of this process: the prefix stays cacheable.
        self._fence = f"tool-description-{os.urandom(4).hex()}"

    async def aclose(self) -> None:
        await self._client.close()

    async def decide(self, turn: Turn) -> Answer:
        self._turns += 1
        try:
            response = await self._client.messages.create(
                model=self.settings.model,
                max_tokens=self.settings.max_tokens,
                system=cast(Any, _system(turn, self._fence)),
                tools=cast(Any, [self._tool]),
                tool_choice={"type": "tool", "name": TOOL_NAME, "disable_parallel_tool_use": True},
                messages=cast(Any, _messages(turn.transcript)),
            )
        except anthropic.APIStatusError as exc:
            raise PlannerError(
                f"the Messages API answered {exc.status_code}: {exc.message}"
            ) from None
        except anthropic.APITimeoutError:
            raise PlannerError(
                f"the Messages API did not answer within {self.settings.timeout:g} s"
            ) from None
        except anthropic.APIConnectionError as exc:
            raise PlannerError(f"the Messages API cannot be reached: {exc}") from None
        usage = _usage(response.usage, self.settings.prices)
        for block in response.content:
            if block.type == "tool_use" and block.name == TOOL_NAME:
                return Answer(block.id, block.input, usage)
        said = " ".join(block.text for block in response.content if block.type == "text")
        # No envelope (cut off at max_tokens, say): the engine's repair turn says so.
        return Answer(f"{NO_TOOL_USE}{self._turns}", said or None, usage)


def _system(turn: Turn, fence: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": PREAMBLE}]
    if turn.system:
        blocks.append({"type": "text", "text": f"Instructions for this user:\n\n{turn.system}"})
    blocks.append({"type": "text", "text": tools_text(turn.tools, fence)})
    blocks[-1]["cache_control"] = {"type": "ephemeral"}  # the end of the stable prefix
    return blocks


def _messages(transcript: Sequence[Entry]) -> list[dict[str, Any]]:
    """The transcript as alternating user and assistant messages."""
    messages: list[dict[str, Any]] = []
    by_text: set[str] = set()

    def add(role: str, block: dict[str, Any]) -> None:
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].append(block)
        else:
            messages.append({"role": role, "content": [block]})

    for entry in transcript:
        if isinstance(entry, Said):
            add("user", {"type": "text", "text": entry.text})
        elif isinstance(entry, Emitted):
            if entry.id.startswith(NO_TOOL_USE) or not isinstance(entry.data, dict):
                by_text.add(entry.id)
                add("assistant", {"type": "text", "text": str(entry.data or "(no answer)")})
            else:
                add(
                    "assistant",
                    {"type": "tool_use", "id": entry.id, "name": TOOL_NAME, "input": entry.data},
                )
        else:
            assert isinstance(entry, Told)
            if entry.to in by_text:
                add("user", {"type": "text", "text": entry.text})
            else:
                block: dict[str, Any] = {
                    "type": "tool_result",
                    "tool_use_id": entry.to,
                    "content": entry.text,
                }
                if entry.is_error:
                    block["is_error"] = True
                add("user", block)
    if messages:
        messages[-1]["content"][-1] = {
            **messages[-1]["content"][-1],
            "cache_control": {"type": "ephemeral"},
        }
    return messages


def _usage(usage: Any, prices: Prices) -> Usage:
    read = usage.cache_read_input_tokens or 0
    write = usage.cache_creation_input_tokens or 0
    cost = (
        usage.input_tokens * prices.input
        + usage.output_tokens * prices.output
        + read * prices.cache_read
        + write * prices.cache_write
    ) / 1_000_000
    return Usage(usage.input_tokens, usage.output_tokens, read, write, cost)
