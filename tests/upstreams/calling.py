"""Calling a pool's tools as a caller granted every one, on the one road (the Executor)."""

from __future__ import annotations

from typing import Any

import mcp_types as types

from gateway.principal import Principal
from gateway.tags.loader import tagset_from_texts
from gateway.tags.resolve import resolve
from gateway.upstreams.execute import Executor, ToolCall
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
    outcome = await Executor(pool).execute(EVERYTHING, ToolCall(name, arguments))
    assert isinstance(outcome.result, types.CallToolResult)
    return outcome.result
