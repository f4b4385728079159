"""The permission check. Every door (MCP front, envelope engine, API) calls `check`.

The rule: a call is permitted when the tool is granted by at least one applied tag, denied
by none, and at least one granting tag's scope admits the arguments. Grants are
alternatives; denials are absolute.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .context import ResolvedContext, ScopeRule, ToolRule
from .flows import FLOW_TOOLS_LISTED, public_flow_tool
from .scopes import Violation, check_scope


class Outcome(StrEnum):
    ALLOWED = "allowed"
    NOT_GRANTED = "not_granted"
    DENIED = "denied"
    OUT_OF_SCOPE = "out_of_scope"


@dataclass(frozen=True, slots=True)
class Decision:
    tool: str
    outcome: Outcome
    reason: str
    granted_by: tuple[str, ...] = ()
    denied_by: tuple[str, ...] = ()
    admitted_by: str | None = None
    """The granting tag whose scope admitted the arguments."""
    violations: tuple[Violation, ...] = ()
    arguments: Mapping[str, Any] | None = None
    """The arguments as admitted, with the defaults `fill` put in: what to send."""

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOWED


Fill = Callable[[Sequence[str], Mapping[str, Any]], Mapping[str, Any]]
"""Given argument paths and a call's arguments, the arguments with the defaults the tool
declares for those paths filled in (the same object when there is nothing to fill)."""


def check(
    context: ResolvedContext,
    tool: str,
    arguments: Mapping[str, Any] | None = None,
    fill: Fill | None = None,
) -> Decision:
    """Decide whether `context` may call `tool` with `arguments`.

    With `arguments` None only the tool itself is checked (what a listing needs); a call
    always passes its arguments, `{}` when it has none. With `fill` (the tool's schema is
    known), each granting tag's scope checks the arguments as the upstream will use them:
    with the declared defaults of the paths it constrains (those it only forbids aside),
    and the admitted arguments are in the decision, to be sent as checked.
    """
    match = context.match(tool)
    granted = _tags(match.granted_by)
    if match.denied_by:
        return Decision(
            tool,
            Outcome.DENIED,
            f"{tool} is denied by {_rules(match.denied_by, 'denied_tools')}; "
            "a denial wins over any grant",
            granted_by=granted,
            denied_by=_tags(match.denied_by),
        )
    if not match.granted_by:
        reason = context.note or f"no applied tag grants {tool}"
        return Decision(tool, Outcome.NOT_GRANTED, reason)
    if tool.startswith(FLOW_TOOLS_LISTED) and not any(
        public_flow_tool(flow.tag) == tool for flow in context.flows
    ):  # a grant of gateway__* does not reach another org's flows, nor names none has
        return Decision(tool, Outcome.NOT_GRANTED, f"no flow tag of this user is {tool}")
    if arguments is None:
        return Decision(
            tool,
            Outcome.ALLOWED,
            f"granted by {_rules(match.granted_by, 'allowed_tools')}",
            granted_by=granted,
        )
    violations: list[Violation] = []
    for tag in granted:
        rules = context.scopes_for(tag, tool)
        seen = arguments
        if fill is not None and rules:
            seen = fill(_checked_paths(rules), arguments)
        found = [v for rule in rules for v in check_scope(tag, rule.scope, seen)]
        if not found:
            within = "; arguments within its scope" if rules else "; it sets no argument scope"
            return Decision(
                tool,
                Outcome.ALLOWED,
                f"granted by tag {tag}{within}",
                granted_by=granted,
                admitted_by=tag,
                arguments=seen,
            )
        violations.extend(found)
    reason = "; ".join(str(v) for v in violations)
    if len(granted) > 1:
        reason = f"none of the {len(granted)} tags granting {tool} admits these arguments: {reason}"
    return Decision(
        tool,
        Outcome.OUT_OF_SCOPE,
        reason,
        granted_by=granted,
        violations=tuple(violations),
    )


def _checked_paths(rules: tuple[ScopeRule, ...]) -> list[str]:
    paths = (
        path
        for rule in rules
        for path, constraint in rule.scope.items()
        if constraint.required or constraint.has_value_checks
    )
    return list(dict.fromkeys(paths))


def _tags(rules: tuple[ToolRule, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(rule.tag for rule in rules))


def _rules(rules: tuple[ToolRule, ...], key: str) -> str:
    by_tag: dict[str, list[str]] = {}
    for rule in rules:
        by_tag.setdefault(rule.tag, []).append(rule.pattern)
    return ", ".join(
        f"tag {tag} ({key}: {', '.join(patterns)})" for tag, patterns in by_tag.items()
    )
