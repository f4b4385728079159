"""`run_session`, the engine as one of the gateway's own MCP tools (`gateway__run_session`):
listed only to callers whose tags grant it, checked and audited like any tool, and run as
the caller the gateway vouches for.

A call starts a session with `message` (and `intent`), or goes on with one by its
`session_id`: an answer to its question (`message`), or a decision on the calls it holds
for approval (`approval`: approve, reject with `message`, edit with `arguments`); the
`session_id` alone asks how the session stands, waiting while it runs (a caller whose call
was cut off by a gateway restart learns the outcome of the resumed session so). It
returns when the session replies, asks, or ends: the reply or the question, the session's
id and status, its calls (tool, decision, ok or not) and what it used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import mcp_types as types

from ..errors import SessionError
from ..own_tools import OwnTool, tool_error
from ..principal import Principal
from ..tags.context import ResolvedContext
from .acting import RUN_SESSION
from .envelopes import MAX_TEXT
from .loop import Engine, SessionResult

DEFINITION: Final = types.Tool(
    name=RUN_SESSION,
    title="Run an agent session",
    description=(
        "Runs an agent session for you: the gateway's engine plans with a model and calls "
        "the tools you may use, as you, until it can reply. Start one with `message`; "
        "when it asks a question or for approval, call again with its `session_id` and "
        "your answer (`message`) or decision (`approval`); with its `session_id` alone, "
        "to learn how it stands (once it stops running, if it is)."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "message": {"type": "string", "maxLength": MAX_TEXT, "description": "What to do."},
            "intent": {"type": "string", "maxLength": 200, "description": "The task's intent."},
            "session_id": {
                "type": "string",
                "maxLength": 100,
                "description": "A session to go on with (one that asked you something).",
            },
            "approval": {
                "type": "string",
                "enum": ["approve", "reject", "edit"],
                "description": "Your decision on the calls the session holds for approval.",
            },
            "arguments": {
                "type": "object",
                "description": "With approval edit: the arguments to use, by the call's index.",
                "additionalProperties": {"type": "object"},
            },
        },
        "additionalProperties": False,
    },
    annotations=types.ToolAnnotations(
        title="Run an agent session",
        read_only_hint=False,
        destructive_hint=True,
        idempotent_hint=False,
        open_world_hint=True,
    ),
)


def run_session_tool(engine: Callable[[], Engine], resolve: Resolver) -> OwnTool:
    """The tool, on the runtime's engine (`engine()`, bound once the runtime is built) and
    its tags (`resolve`)."""

    async def handler(
        arguments: Mapping[str, Any], caller: Principal | None
    ) -> types.CallToolResult:
        if caller is None:
            return tool_error("run_session: no caller: it runs only through the gateway")
        message = arguments.get("message")
        session_id = arguments.get("session_id")
        approval = arguments.get("approval")
        context = resolve(caller, arguments.get("intent"))
        running = engine()
        try:
            if session_id is None:
                if not message:
                    return tool_error("run_session: a new session needs a message")
                session = await running.start(context, message)
                result = await running.run(session)
            else:
                session = await running.load(session_id, context)
                if approval is not None:
                    edits = _edits(arguments.get("arguments"))
                    result = await running.approve(session, approval, message or "", edits)
                elif message:
                    result = await running.answer(session, message)
                else:  # how it stands, once it stops running (resumed after a restart, say)
                    result = await running.wait(session)
        except SessionError as exc:
            return tool_error(f"run_session: {exc}")
        except ValueError as exc:
            return tool_error(f"run_session: {exc}")
        return _answer(result)

    return OwnTool(DEFINITION, handler)


Resolver = Callable[[Principal, str | None], ResolvedContext]


def _edits(value: Any) -> dict[int, dict[str, Any]]:
    if value is None:
        return {}
    edits = {}
    for key, arguments in dict(value).items():
        try:
            index = int(key)
        except ValueError:
            raise ValueError(f"arguments: {key!r} is not a call's index (0, 1, ...)") from None
        edits[index] = dict(arguments)
    return edits


def _answer(result: SessionResult) -> types.CallToolResult:
    summary = {
        "session_id": result.session_id,
        "status": result.state.value,
        "text": result.text,
        "calls": [{"tool": c.tool, "decision": c.decision, "ok": c.ok} for c in result.calls],
        "spent": result.spent,
    }
    said = result.text or ""
    head = f"[{result.state.value}] session {result.session_id}"
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=f"{head}\n\n{said}".rstrip())],
        structured_content=summary,
        is_error=result.state.value in ("failed", "rejected"),
    )
