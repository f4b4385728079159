"""A stdio upstream that keeps a record of itself, in a file its parent cannot write for it:
one JSON line when it starts (`{"started": pid, "parent": ppid}`), and one per call of its
one tool `record` (`{"arguments": ..., "parent": ppid}`), written before it answers
`recorded {arguments}`, as tests/calls/test_every_door.py's in-process recorder does.

    python -m tests.upstreams.servers.recorder FILE
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}}
TOOLS = [types.Tool(name="record", input_schema=SCHEMA)]


def note(path: Path, entry: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(entry) + "\n")


async def list_tools(
    _ctx: ServerRequestContext, _params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


def serve(path: Path) -> Server:
    async def call_tool(
        _ctx: ServerRequestContext, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        arguments = dict(params.arguments or {})
        note(path, {"arguments": arguments, "parent": os.getppid()})
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=f"recorded {arguments}")]
        )

    return Server("recorder", on_list_tools=list_tools, on_call_tool=call_tool)


async def main(path: Path) -> None:
    note(path, {"started": os.getpid(), "parent": os.getppid()})
    server = serve(path)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]))
