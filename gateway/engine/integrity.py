"""Plan integrity: which of the calls an envelope asks for may run without the user.

Tool results are data the model reads, and data can carry instructions: "Once an LLM
agent has ingested untrusted input, it must be constrained so that it is impossible for
that input to trigger any consequential actions" (Beurer-Kellner et al. 2025). So a
session is tainted from the first result it reads (an error answer included) of a tool
its caller's tags do not mark `trusted_output`. From then on, only two kinds of call run
without asking:

- calls the model committed to before the taint: a plan emitted while the session was
  clean runs all its steps (an earlier step's output may fill a later step's arguments,
  but never choose another tool);
- calls of tools annotated read-only (the upstream's hint, `readOnlyHint`).

Every other call waits for the user's approval (or, configured so, is refused). Tool
definitions are the upstreams' text too: with `engine.taint_definitions` they taint a
session before its first decision (unless every shown tool is trusted); by default only
results do, and a call planted in a description is stopped only by the permission and
scope checks until a result taints the session. Besides taint, a tag may mark tools
`needs_approval`: their calls always wait. The prompt also
frames results as data, but that is a heuristic; this is the check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..flows.access import find_flow
from ..tags.context import ResolvedContext
from .envelopes import Envelope, PlanEnvelope, ToolEnvelope, ToolsEnvelope, has_references

ASKED_BY_TAGS: Final = "the user's tags ask for approval of this tool"
AFTER_TAINT: Final = (
    "the session has read untrusted data since the model committed to this call: only "
    "read-only tools, or a plan committed before that, run without approval"
)


@dataclass(frozen=True, slots=True)
class Held:
    """One call that may not run without the user: where it is in its envelope, and why."""

    index: int
    tool: str
    arguments: dict[str, Any]
    why: str


def calls_of(envelope: Envelope) -> list[tuple[str, dict[str, Any]]]:
    """The (tool, arguments) an acting envelope asks for, in its order."""
    if isinstance(envelope, ToolEnvelope):
        return [(envelope.call.tool, envelope.call.arguments)]
    if isinstance(envelope, ToolsEnvelope):
        return [(call.tool, call.arguments) for call in envelope.calls]
    if isinstance(envelope, PlanEnvelope):
        return [(step.tool, step.arguments) for step in envelope.steps]
    return []


def held(
    caller: ResolvedContext,
    envelope: Envelope,
    tainted: bool,
    read_only: Callable[[str], bool],
    permitted: Callable[[str, dict[str, Any]], bool],
) -> list[Held]:
    """The calls of `envelope` that need the user's approval, for a session that was
    `tainted` (or not) when the model emitted it. A call the tags do not permit is never
    put to the user: it is refused (and audited) as it is."""
    found = []
    calls: list[tuple[str, dict[str, Any] | None]] = list(calls_of(envelope))
    if isinstance(envelope, PlanEnvelope) and envelope.flow is not None:
        # A flow to follow: its steps, whose arguments are known only as they run.
        flow = find_flow(caller, envelope.flow)
        calls = [(step.tool, None) for step in flow.steps] if flow is not None else []
    for index, (tool, arguments) in enumerate(calls):
        # A step's argument that takes an earlier output is known only when it runs: the
        # check cannot judge it now, so it does not spare the step from being held.
        known = arguments is not None and not has_references(arguments)
        if known and not permitted(tool, arguments or {}):
            continue
        arguments = arguments or {}
        why = ASKED_BY_TAGS if caller.needs_approval(tool) else AFTER_TAINT
        if why == ASKED_BY_TAGS or (tainted and not read_only(tool)):
            if isinstance(envelope, PlanEnvelope) and envelope.flow is not None:
                # What the user decides on: the flow, and the inputs the model chose.
                inputs = envelope.inputs or {}
                why = f"a step of flow {envelope.flow!r} with the inputs {inputs}: {why}"
            found.append(Held(index, tool, arguments, why))
    return found


def question(calls: Sequence[Held]) -> str:
    """What the user is asked."""
    listed = "; ".join(f"{call.tool} with {call.arguments} ({call.why})" for call in calls)
    return f"May I run {listed}? Approve, reject (with a message), or edit the arguments."
