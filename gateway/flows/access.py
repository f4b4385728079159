"""Which flows a caller may run (a flow tag that applies to it, whose tool its tags do not
deny), and the budgets a flow's session runs with."""

from __future__ import annotations

from ..engine.budgets import Budgets
from ..errors import UnknownFlow
from ..tags.context import ResolvedContext
from ..tags.flows import CompiledFlow, public_flow_tool
from ..tags.policy import check


def find_flow(caller: ResolvedContext, name: str) -> CompiledFlow | None:
    """The caller's flow tag `name`, compiled; None when the caller has none, or its tags
    deny the flow's tool (`denied_tools: [gateway__flow__x]`): one word on a flow,
    whichever door runs it."""
    for info in caller.flows:
        if info.tag == name and check(caller, public_flow_tool(name)).allowed:
            return info.flow
    return None


def flow_of(caller: ResolvedContext, name: str) -> CompiledFlow:
    """find_flow's flow, or UnknownFlow."""
    flow = find_flow(caller, name)
    if flow is None:
        raise UnknownFlow(name)
    return flow


def flow_budgets(budgets: Budgets, flow: CompiledFlow) -> Budgets:
    """A flow session's budgets: its calls are the steps its author wrote (each as often
    as its retries allow), not a model's, so the tool call budget is at least that."""
    calls = sum(
        (s.spec.retry.attempts if s.spec.retry else 3) if s.spec.on_error == "retry" else 1
        for s in flow.steps
    )
    if calls <= budgets.tool_calls:
        return budgets
    return budgets.model_copy(update={"tool_calls": calls + budgets.tool_calls})
