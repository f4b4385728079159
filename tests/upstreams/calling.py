"""Calling a pool's tools as a caller granted every one, on the one road (the call service)."""

from __future__ import annotations

from typing import Any

import mcp_types as types

from gateway.calls import Completed, Outcome, ToolCall, ToolService
from gateway.principal import Principal
from gateway.tags.loader import tagset_from_texts
from gateway.tags.resolve import resolve
from gateway.upstreams.pool import Pool

EVERYTHING = resolve(
    tagset_from_texts(
        {
            "t.yaml": """
users:
  tester: {roles: [tester]}
tags:
  - tag: every_tool
    kind: tool
    payload: {config: {assigned_roles: [tester], allowed_tools: ["*"]}}
"""
        }
    ),
    Principal("tester", "t"),
)


async def call(pool: Pool, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
    """A call on the one road to an upstream, by a caller granted every tool."""
    result = settle(await ToolService(pool).call(EVERYTHING, ToolCall(name, arguments)))
    assert isinstance(result, types.CallToolResult)
    return result


def settle(outcome: Outcome) -> types.CallToolResult | types.InputRequiredResult:
    """The result of a completed call; the outcome's error raised otherwise."""
    if not isinstance(outcome, Completed):
        raise outcome.error
    return outcome.result
