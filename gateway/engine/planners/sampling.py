"""A planner that asks the caller's own model: each decision is a `sampling/createMessage`
to the MCP client whose run_session call this is (a handshake-era client that declared
sampling; MCP 2026-07-28 deprecates sampling, so this is never the default).

Where the client declared tool use in sampling (`sampling.tools`), `emit_envelope` is the
request's one tool and its use is required (sampling has no naming of the tool to use:
the engine validates and repairs the answer as any other); otherwise the model is asked
for the envelope as one JSON object in its text, and that is parsed. The system prompt is
the Anthropic planner's: the preamble, the caller's tag prompt, the permitted tools as
framed data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, Final

import mcp_types as types

from ...upstreams.relay import Asker
from ..envelopes import envelope_schema
from .base import Answer, Emitted, Entry, Planner, PlannerError, Said, Told, Turn
from .prompt import PREAMBLE, TOOL_NAME, tools_text

IN_TEXT: Final = (
    "Answer with exactly one envelope as a single JSON object and nothing else (no prose, "
    "no code fence), matching this JSON Schema:\n"
)
SAMPLED: Final = "sampled-"
"""The id prefix of an answer given as text (no tool use to take an id from)."""


class SamplingPlanner(Planner):
    name = "sampling"

    def __init__(self, asker: Asker, with_tools: bool, max_tokens: int = 4_096) -> None:
        """`asker`: the caller's, for this call; `with_tools`: it declared tool use in
        sampling."""
        self._asker = asker
        self._with_tools = with_tools
        self._max_tokens = max_tokens
        self._fence = f"tool-description-{os.urandom(4).hex()}"
        # A tool's inputSchema is an object schema at its top (MCP's Tool says so).
        self._schema = {"type": "object", **envelope_schema()}

    async def decide(self, turn: Turn) -> Answer:
        system = [PREAMBLE]
        if turn.system:
            system.append(f"Instructions for this user:\n\n{turn.system}")
        system.append(tools_text(turn.tools, self._fence))
        if not self._with_tools:
            system.append(IN_TEXT + json.dumps(self._schema, separators=(",", ":")))
        params = types.CreateMessageRequestParams(
            messages=_messages(turn.transcript, self._with_tools),
            system_prompt="\n\n".join(system),
            include_context="none",
            max_tokens=self._max_tokens,
            tools=[
                types.Tool(
                    name=TOOL_NAME,
                    description="Answer this turn with one envelope.",
                    input_schema=self._schema,
                )
            ]
            if self._with_tools
            else None,
            tool_choice=types.ToolChoice(mode="required") if self._with_tools else None,
        )
        answer = await self._asker.create_message(params)
        if isinstance(answer, types.ErrorData):
            raise PlannerError(f"the caller's model did not answer: {answer.message}")
        number = sum(isinstance(entry, Emitted) for entry in turn.transcript) + 1
        blocks = answer.content if isinstance(answer.content, list) else [answer.content]
        for block in blocks:
            if isinstance(block, types.ToolUseContent) and block.name == TOOL_NAME:
                return Answer(block.id, block.input)
        text = "".join(block.text for block in blocks if isinstance(block, types.TextContent))
        return Answer(f"{SAMPLED}{number}", _parsed(text))


def _parsed(text: str) -> Any:
    """The JSON object in `text` (a code fence around it forgiven), else the text itself,
    for the engine's repair turn to show the model."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    try:
        return json.loads(stripped)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        return text or None


def _messages(transcript: Sequence[Entry], with_tools: bool) -> list[types.SamplingMessage]:
    """The transcript as sampling messages: with tools, an envelope is the assistant's tool
    use and what the engine told of it the tool's result; without, both are text."""
    messages: list[types.SamplingMessage] = []
    for entry in transcript:
        if isinstance(entry, Said):
            messages.append(_message("user", types.TextContent(type="text", text=entry.text)))
        elif isinstance(entry, Emitted):
            if with_tools and not entry.id.startswith(SAMPLED) and isinstance(entry.data, dict):
                block: Any = types.ToolUseContent(
                    type="tool_use", id=entry.id, name=TOOL_NAME, input=entry.data
                )
            else:
                said = entry.data if isinstance(entry.data, str) else json.dumps(entry.data)
                block = types.TextContent(type="text", text=said)
            messages.append(_message("assistant", block))
        else:
            assert isinstance(entry, Told)
            to_tool = with_tools and not entry.to.startswith(SAMPLED)
            told = types.TextContent(type="text", text=entry.text)
            if to_tool:
                block = types.ToolResultContent(
                    type="tool_result",
                    tool_use_id=entry.to,
                    content=[told],
                    is_error=entry.is_error or None,
                )
            else:
                block = told
            messages.append(_message("user", block))
    return messages


def _message(role: str, block: Any) -> types.SamplingMessage:
    return types.SamplingMessage.model_validate({"role": role, "content": block})
