"""A stdio upstream (handshake era) whose one tool, `chatty`, asks the caller a question
(elicitation) while it goes on reporting progress: the messages of one call then come
from two sources at once, the tool's progress and the question.

    python -m tests.upstreams.servers.chatty
"""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.runner import serve_loop
from mcp.server.stdio import stdio_server

STEPS = 40
ASK_AT = 10
TOOLS = [types.Tool(name="chatty", input_schema={"type": "object"})]


async def list_tools(
    _ctx: ServerRequestContext, _params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def call_tool(
    ctx: ServerRequestContext, params: types.CallToolRequestParams
) -> types.CallToolResult:
    """Arguments (all optional): `steps` (STEPS), `ask` (true: the question at ASK_AT),
    `pause` (seconds between two progress messages, 0: none)."""
    arguments = params.arguments or {}
    steps = int(arguments.get("steps", STEPS))
    asking = bool(arguments.get("ask", True))
    pause = float(arguments.get("pause", 0))
    schema: dict[str, Any] = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    answers: list[str] = []

    async def ask() -> None:
        answer = await ctx.session.elicit_form("Sure?", schema, related_request_id=ctx.request_id)
        answers.append(answer.action)

    async with anyio.create_task_group() as tasks:
        for step in range(steps):
            if step == ASK_AT and asking:
                tasks.start_soon(ask)
            await ctx.session.report_progress(step, steps)
            if pause:
                await anyio.sleep(pause)
    text = answers[0] if asking else "done"
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


server = Server("chatty", on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    async with stdio_server() as (read, write), server.lifespan(server) as state:
        options = server.create_initialization_options()
        await serve_loop(server, read, write, lifespan_state=state, init_options=options)


if __name__ == "__main__":
    anyio.run(main)
