"""The permission check. Every door (MCP front, envelope engine, API) calls `check`.

The rule: a call is permitted when the tool is granted by at least one applied tag, denied
by none, and at least one granting tag's scope admits the arguments. Grants are
alternatives; denials are absolute.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .context import ResolvedContext, ToolRule
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

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOWED


def check(
    context: ResolvedContext, tool: str, arguments: Mapping[str, Any] | None = None
) -> Decision:
    """Decide whether `context` may call `tool` with `arguments`.

    With `arguments` None only the tool itself is checked (what a listing needs); a call
    always passes its arguments, `{}` when it has none.
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
        found = [v for rule in rules for v in check_scope(tag, rule.scope, arguments)]
        if not found:
            within = "; arguments within its scope" if rules else "; it sets no argument scope"
            return Decision(
                tool,
                Outcome.ALLOWED,
                f"granted by tag {tag}{within}",
                granted_by=granted,
                admitted_by=tag,
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


def _tags(rules: tuple[ToolRule, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(rule.tag for rule in rules))


def _rules(rules: tuple[ToolRule, ...], key: str) -> str:
    by_tag: dict[str, list[str]] = {}
    for rule in rules:
        by_tag.setdefault(rule.tag, []).append(rule.pattern)
    return ", ".join(
        f"tag {tag} ({key}: {', '.join(patterns)})" for tag, patterns in by_tag.items()
    )
