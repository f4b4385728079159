"""Flows as MCP tools: every flow tag is also one of the gateway's own tools,
`gateway__flow__<name>` (the tag's name without a leading `flow_`), whose input schema is
the flow's `inputs`; calling it runs the flow as the caller and answers its output, with a
progress notification per step. A desktop client so gets its company's workflows as tools,
with no model in the gateway at all.

The tool takes the road of every tool: listed only to a caller whose tags grant it (a flow
tag grants its own tool to the users it applies to; `denied_tools` can take it away),
checked and audited by the call service, and every step's tool checked again as the
caller when it runs. The catalog holds one definition per name, and orgs may write flows
of the same name: a caller is shown its own org's (views.py), and the call is checked
against that flow's `inputs` when it starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

import anyio
import mcp_types as types

from .. import jsoncodec
from ..errors import SessionError
from ..own_tools import OwnTool, Request, tool_error
from ..state.base import START
from ..tags.context import FlowInfo, ResolvedContext
from ..tags.flows import flow_tool, public_flow_tool
from ..tags.loader import TagSet
from ..upstreams.config import RESERVED_PREFIX

logger = logging.getLogger("gateway.flows")

ANY_OBJECT: Final = {"type": "object"}


def definition(flow: FlowInfo, schema: Mapping[str, Any] | None = None) -> types.Tool:
    """The tool of `flow`; `schema`: its input schema (the flow's inputs by default)."""
    steps = ", ".join(step.tool for step in flow.steps[:10])
    more = f" and {len(flow.steps) - 10} more" if len(flow.steps) > 10 else ""
    description = (flow.description or flow.title).strip()
    return types.Tool(
        name=flow_tool(flow.tag),
        title=flow.title,
        description=f"{description}\n\nA workflow of your organisation: runs {steps}{more}, "
        "step by step, as you.",
        input_schema=dict(schema if schema is not None else flow.flow.inputs),
        annotations=types.ToolAnnotations(
            title=flow.title, read_only_hint=False, idempotent_hint=False, open_world_hint=True
        ),
    )


def flow_listing(flow: FlowInfo) -> types.Tool:
    """The tool of `flow` as a caller who has it is shown it: under its public name."""
    tool = definition(flow)
    return tool.model_copy(update={"name": public_flow_tool(flow.tag)})


class FlowTools:
    """The own tools of every flow of the current tag set, made again when it changes."""

    def __init__(
        self,
        tagset: Callable[[], TagSet],
        resolve: Callable[[Any], ResolvedContext],
        engine: Callable[[], Any],
    ) -> None:
        self._tagset = tagset
        self._resolve = resolve
        self._engine = engine
        self._version: int | None = None
        self._tools: dict[str, OwnTool] = {}

    def __call__(self) -> Mapping[str, OwnTool]:
        tagset = self._tagset()
        if tagset.version != self._version:
            self._tools = self._build(tagset)
            self._version = tagset.version
        return self._tools

    def _build(self, tagset: TagSet) -> dict[str, OwnTool]:
        found: dict[str, list[FlowInfo]] = {}
        seen: set[tuple[str, str]] = set()
        for org in tagset.orgs.values():
            for loaded in org.tags.values():
                if loaded.flow is None or (loaded.source, loaded.name) in seen:
                    continue
                seen.add((loaded.source, loaded.name))
                tag = loaded.tag
                info = FlowInfo(
                    loaded.name,
                    tag.title,
                    loaded.flow.definition.description or tag.payload.meta.description,
                    tag.payload.meta.intents,
                    loaded.flow,
                )
                found.setdefault(flow_tool(loaded.name), []).append(info)
        tools = {}
        for name, flows in sorted(found.items()):
            schemas = {jsoncodec.dumps(f.flow.inputs, sort_keys=True) for f in flows}
            # Flows of one name in several orgs: each caller is shown and held to its own.
            schema = None if len(schemas) == 1 else ANY_OBJECT
            tools[name] = OwnTool(definition(flows[0], schema), self._handler(name))
        return tools

    def _handler(self, name: str) -> Callable[[Mapping[str, Any], Request], Any]:
        async def handler(arguments: Mapping[str, Any], request: Request) -> types.CallToolResult:
            return await self._run(name, arguments, request)

        return handler

    async def _run(
        self, name: str, arguments: Mapping[str, Any], request: Request
    ) -> types.CallToolResult:
        from ..engine.caller import Reporter
        from ..engine.states import SessionState

        public = f"{RESERVED_PREFIX}{name}"
        caller = request.caller
        if caller is None:
            return tool_error(f"{public}: no caller: it runs only through the gateway")
        context = self._resolve(caller)
        # The caller's own flow of this name: orgs may have flows of one name.
        tag = next((f.tag for f in context.flows if flow_tool(f.tag) == name), None)
        if tag is None:  # the call service lets it through only to a caller who has one
            return tool_error(f"{public}: no flow of yours is this tool")
        engine = self._engine()
        try:
            session = await engine.start(context, "", flow=tag, inputs=dict(arguments))
        except SessionError as exc:
            return tool_error(f"{public}: {exc}")
        reporter = None
        async with anyio.create_task_group() as tasks:
            if request.progress is not None:
                reporter = Reporter(request.progress, engine.recorder.store, session.id, START)
                tasks.start_soon(reporter.follow)
            try:
                result = await engine.run(session)
            finally:
                tasks.cancel_scope.cancel()
        if reporter is not None:
            await reporter.catch_up()
        summary: dict[str, Any] = {"session_id": result.session_id, "status": result.state.value}
        if result.state is SessionState.COMPLETED:
            state = await engine.recorder.store.get_flow_state(session.id, tag)
            summary["output"] = ((state or {}).get("end") or {}).get("output")
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=result.text or "")],
                structured_content=summary,
            )
        said = result.text or result.state.value
        if result.state is SessionState.INPUT_REQUIRED:
            said = (
                f"{said}\n\nSession {result.session_id} waits for you: answer through "
                f"{RESERVED_PREFIX}run_session with its session_id."
            )
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=said)],
            structured_content=summary,
            is_error=result.state is not SessionState.INPUT_REQUIRED,
        )
