"""An upstream for the engine's restart tests, over stdio: two tools that write each
attempt to a ledger file before they do anything else, then wait while a gate file exists,
so a test can kill the gateway while a call is under way and count what reached here.

    python -m tests.engine.servers.ledger LEDGER GATES

A call of `<tool>` waits while the file GATES/<tool> exists, after it is written to the
ledger; one of `<tool>` with `what` W waits while GATES/<tool>.W.before exists, before.

Tools: `read` (annotated read-only) and `write` (annotated destructive, not idempotent),
both taking `what`. A ledger line is `<tool> <what> <idempotency key>`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server

IDEMPOTENCY_META = "io.mcp-gateway/idempotency-key"
GATE_SECONDS = 60.0
"""The longest a call waits at the gate: no test leaves it shut that long."""

SCHEMA = {"type": "object", "properties": {"what": {"type": "string"}}, "required": ["what"]}
TOOLS = [
    types.Tool(
        name="read",
        description="Read a thing",
        input_schema=SCHEMA,
        annotations=types.ToolAnnotations(read_only_hint=True),
    ),
    types.Tool(
        name="write",
        description="Write a thing",
        input_schema=SCHEMA,
        annotations=types.ToolAnnotations(destructive_hint=True, idempotent_hint=False),
    ),
]


async def list_tools(
    _ctx: ServerRequestContext, _params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


def tools(ledger: Path, gates: Path) -> Server:
    async def call_tool(
        _ctx: ServerRequestContext, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        arguments: dict[str, Any] = dict(params.arguments or {})
        meta: dict[str, Any] = dict(params.meta or {})
        key = meta.get(IDEMPOTENCY_META, "-")
        what = arguments.get("what")
        for _ in range(int(GATE_SECONDS / 0.02)):  # held before it counts: not an attempt yet
            if not (gates / f"{params.name}.{what}.before").exists():
                break
            await anyio.sleep(0.02)
        with ledger.open("a", encoding="utf-8") as file:
            file.write(f"{params.name} {arguments.get('what')} {key}\n")
        for _ in range(int(GATE_SECONDS / 0.02)):  # a file has no event to wait on
            if not (gates / params.name).exists():
                break
            await anyio.sleep(0.02)
        text = f"{params.name} {arguments.get('what')}: done"
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    return Server("ledger-upstream", on_list_tools=list_tools, on_call_tool=call_tool)


async def serve(ledger: Path, gates: Path) -> None:
    server = tools(ledger, gates)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(serve, Path(sys.argv[1]), Path(sys.argv[2]))
