"""An upstream for the flow tests, over stdio, that counts every call it receives.

    python -m tests.flows.servers.ops

Tools:
- `add` (read-only): `a + b` of two integers, as text and as `structured.sum`;
- `echo` (no annotations): its arguments back as `structured.args`, with the Python type
  name of each (`structured.types`), which shows what JSON type each argument arrived as;
- `meet` (read-only): waits, at most `wait` seconds (MEET_SECONDS by default), for a
  second caller in the same `room`; met, it answers whom it met; alone, an error. Two
  calls that both meet ran at once;
- `flaky` (read-only): its first `fails` calls for one `name` answer an error, later ones
  `attempt N`;
- `write` (destructive, not idempotent): always answers an error;
- `secret`: answers "leaked" (the tests' callers may not call it);
- `tally` (read-only): how many calls each tool got (`calls`), and each flaky name
  (`attempts`); tally's own calls are not counted.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

import anyio
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server

MEET_SECONDS: Final = 10.0
"""How long `meet` waits for company: far longer than two calls sent at once take to
arrive, far shorter than a test's bound."""

READ_ONLY = types.ToolAnnotations(read_only_hint=True)
UNSAFE = types.ToolAnnotations(destructive_hint=True, idempotent_hint=False)


def _schema(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required)}


TOOLS = [
    types.Tool(
        name="add",
        description="Add two integers",
        input_schema=_schema({"a": {"type": "integer"}, "b": {"type": "integer"}}, "a", "b"),
        annotations=READ_ONLY,
    ),
    types.Tool(name="echo", description="Echo the arguments", input_schema={"type": "object"}),
    types.Tool(
        name="meet",
        description="Wait for a second caller in the room",
        input_schema=_schema(
            {"room": {"type": "string"}, "who": {"type": "string"}, "wait": {"type": "number"}},
            "room",
        ),
        annotations=READ_ONLY,
    ),
    types.Tool(
        name="flaky",
        description="Fail the first calls",
        input_schema=_schema({"name": {"type": "string"}, "fails": {"type": "integer"}}, "name"),
        annotations=READ_ONLY,
    ),
    types.Tool(
        name="write",
        description="Write a thing (always fails)",
        input_schema=_schema({"what": {"type": "string"}}),
        annotations=UNSAFE,
    ),
    types.Tool(name="secret", description="Tell a secret", input_schema={"type": "object"}),
    types.Tool(
        name="tally",
        description="Calls received",
        input_schema={"type": "object"},
        annotations=READ_ONLY,
    ),
]

calls: Counter[str] = Counter()
attempts: Counter[str] = Counter()
rooms: dict[str, tuple[str, anyio.Event]] = {}
met: dict[str, str] = {}


async def list_tools(
    _ctx: ServerRequestContext, _params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


def _result(text: str, structured: dict[str, Any] | None = None) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], structured_content=structured
    )


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


async def meet(room: str, who: str, wait: float) -> types.CallToolResult:
    waiting = rooms.pop(room, None)
    if waiting is not None:  # the second to come: the first is waiting for us
        other, arrived = waiting
        met[room] = who
        arrived.set()
        return _result(f"{who} met {other}", {"met": other})
    arrived = anyio.Event()
    rooms[room] = (who, arrived)
    with anyio.move_on_after(wait):
        await arrived.wait()
    if not arrived.is_set():
        rooms.pop(room, None)
        return _error(f"{who} waited {wait:g} s in {room} alone")
    other = met.pop(room)
    return _result(f"{who} met {other}", {"met": other})


async def call_tool(
    _ctx: ServerRequestContext, params: types.CallToolRequestParams
) -> types.CallToolResult:
    arguments: dict[str, Any] = dict(params.arguments or {})
    name = params.name
    if name == "tally":
        return _result("tally", {"calls": dict(calls), "attempts": dict(attempts)})
    calls[name] += 1
    if name == "add":
        total = arguments["a"] + arguments["b"]
        return _result(str(total), {"sum": total})
    if name == "echo":
        kinds = {key: type(value).__name__ for key, value in arguments.items()}
        return _result(f"echo {sorted(arguments)}", {"args": arguments, "types": kinds})
    if name == "meet":
        wait = float(arguments.get("wait", MEET_SECONDS))
        return await meet(str(arguments["room"]), str(arguments.get("who", "someone")), wait)
    if name == "flaky":
        key = str(arguments["name"])
        attempts[key] += 1
        if attempts[key] <= int(arguments.get("fails", 1)):
            return _error(f"flaky {key}: attempt {attempts[key]} failed")
        return _result(f"attempt {attempts[key]}", {"attempt": attempts[key]})
    if name == "write":
        return _error(f"could not write {arguments.get('what')!r}")
    if name == "secret":
        return _result("leaked")
    return _error(f"no tool {name!r}")


server = Server("ops-upstream", on_list_tools=list_tools, on_call_tool=call_tool)


async def serve() -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(serve)
