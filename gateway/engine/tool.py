"""`run_session`, the engine as one of the gateway's own MCP tools (`gateway__run_session`):
listed only to callers whose tags grant it, checked and audited like any tool, and run as
the caller the gateway vouches for.

A call starts a session with `message` (and `intent`), or one that runs a flow of the
caller's (`flow`, with its `inputs`), or goes on with one by its
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

import anyio
import mcp_types as types
from anyio.abc import TaskGroup

from ..errors import SessionError
from ..own_tools import OwnTool, Request, tool_error
from ..state.base import START
from ..tags.context import ResolvedContext
from ..upstreams.relay import Asker, Declaring
from .acting import RUN_SESSION
from .caller import Reporter, ask
from .envelopes import MAX_TEXT
from .loop import Engine, SessionResult
from .planners.base import Planner
from .recovery import Resolve
from .session import Session, SessionOwner
from .settings import EngineSettings
from .states import SessionState

MAX_ASKS: Final = 10
"""Questions and approvals put to the caller by elicitation in one call, at most."""

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
            "flow": {
                "type": "string",
                "maxLength": 128,
                "description": "Run this flow of yours (a workflow your organisation wrote) "
                "step by step instead of planning with a model; `message` is then optional.",
            },
            "inputs": {
                "type": "object",
                "description": "With flow: the flow's input, as its inputs schema says.",
            },
            "session_id": {
                "type": "string",
                "maxLength": 100,
                "description": "A session to go on with (one that asked you something).",
            },
            "step": {
                "type": "string",
                "maxLength": 100,
                "description": "With an answer or approval: the `step` of the result you "
                "answer; refused if the session has moved on since (another answered).",
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


def run_session_tool(
    engine: Callable[[], Engine], resolve: Resolve, settings: EngineSettings | None = None
) -> OwnTool:
    """The tool, on the runtime's engine (`engine()`, bound once the runtime is built), its
    tags (`resolve`) and gateway.yaml's engine `settings` (a sampling planner is built per
    call, on the caller's asker)."""
    sampling = settings is not None and settings.planner == "sampling"
    max_tokens = settings.anthropic.max_tokens if settings is not None else 4_096

    async def handler(arguments: Mapping[str, Any], request: Request) -> types.CallToolResult:
        caller = request.caller
        if caller is None:
            return tool_error("run_session: no caller: it runs only through the gateway")
        planner = None
        if sampling:
            planner = _sampling_planner(request.asker, max_tokens)
            if planner is None and arguments.get("flow") is None:  # a flow needs none
                return tool_error(
                    "run_session: this gateway's sessions are planned by the caller's own "
                    "model (sampling), and this caller did not declare sampling"
                )
        context = resolve(caller, arguments.get("intent"))
        running = engine()
        parent = request.owner
        depth = parent.depth + 1 if isinstance(parent, SessionOwner) else 0
        if depth > running.nested_depth:  # the engine refuses it first; a door never asks
            return tool_error("run_session: a session may not start another session here")
        reporting: list[Reporter] = []
        failure: str | None = None
        async with anyio.create_task_group() as tasks:
            try:  # in the group: its errors would come out of it as an ExceptionGroup
                result = await _step(
                    running, context, arguments, planner, request, tasks, reporting, depth
                )
                for _ in range(MAX_ASKS):  # questions put to the caller in this call
                    if result.state is not SessionState.INPUT_REQUIRED or request.asker is None:
                        break
                    answered = await ask(request.asker, result)
                    if answered is None:
                        break
                    result = await running.respond(result, context, *answered, planner)
            except (SessionError, ValueError) as exc:
                failure = f"run_session: {exc}"
            tasks.cancel_scope.cancel()
        if failure is not None:
            return tool_error(failure)
        for reporter in reporting:  # its last events, before the result
            await reporter.catch_up()
        return _answer(result)

    return OwnTool(DEFINITION, handler)


async def _step(
    running: Engine,
    context: ResolvedContext,
    arguments: Mapping[str, Any],
    planner: Planner | None,
    request: Request,
    tasks: TaskGroup,
    reporting: list[Reporter],
    depth: int,
) -> SessionResult:
    """What the call's arguments ask of the engine: start a session, answer it, decide on
    its approval, or wait for it; its progress reported from its stream meanwhile."""
    message = arguments.get("message")
    session_id = arguments.get("session_id")
    approval = arguments.get("approval")

    def reported(session: Session, after: str) -> None:
        if request.progress is not None:
            reporter = Reporter(request.progress, running.recorder.store, session.id, after)
            reporting.append(reporter)
            tasks.start_soon(reporter.follow)

    if session_id is None:
        flow = arguments.get("flow")
        if not message and flow is None:
            raise ValueError("a new session needs a message (or a flow to run)")
        inputs = arguments.get("inputs")
        session = await running.start(context, message or "", depth, flow, inputs)
        reported(session, START)
        return await running.run(session, planner=planner)
    answering = approval is not None or bool(message)
    step = arguments.get("step") if answering else None  # only an answer is for a step
    session = await running.load(session_id, context, step)
    reported(session, session.last_event)
    if approval is not None:
        edits = _edits(arguments.get("arguments"))
        return await running.approve(session, approval, message or "", edits, planner)
    if message:
        return await running.answer(session, message, planner)
    if planner is not None or not running.sweeping:  # else a sweep resumes it, if need be
        return await running.pick_up(session, planner)
    return await running.wait(session)  # how it stands (resumed after a restart, say)


def _sampling_planner(asker: Asker | None, max_tokens: int) -> Planner | None:
    """A planner on the caller's own model, if it declared sampling."""
    declared = asker.capabilities() if isinstance(asker, Declaring) else None
    if asker is None or declared is None or declared.sampling is None:
        return None
    from .planners.sampling import SamplingPlanner

    return SamplingPlanner(asker, declared.sampling.tools is not None, max_tokens)


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
        "waiting": result.waiting,
        "step": result.last_event,
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
