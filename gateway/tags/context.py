"""ResolvedContext: everything the tags say about one caller, with the reasons.

It is the input of the one permission check (`policy.check`) and of every door that shows
or runs tools. It is immutable and shared by all requests of the caller until the tag
configuration changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..principal import Principal
from .flows import CompiledFlow
from .model import FlowStep, TagKind, ToolScope
from .patterns import ToolGlob


@dataclass(frozen=True, slots=True)
class AppliedTag:
    name: str
    kind: TagKind
    title: str
    priority: int
    where: str
    """file:line of the tag's definition."""
    reasons: tuple[str, ...]
    """Why it applies: "assigned user alice", "assigned role support", "included by X", ..."""


@dataclass(frozen=True, slots=True)
class SkippedTag:
    """A tag that was assigned but does not apply, and why (e.g. another intent)."""

    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class BudgetLimit:
    """One limit of one applied tag's session_budgets."""

    tag: str
    name: str
    value: float


@dataclass(frozen=True, slots=True)
class ToolRule:
    """One allowed_tools or denied_tools entry of one applied tag."""

    tag: str
    glob: ToolGlob

    @property
    def pattern(self) -> str:
        return self.glob.pattern


@dataclass(frozen=True, slots=True)
class ScopeRule:
    """The argument constraints one granting tag sets on the tools matching `glob`."""

    tag: str
    glob: ToolGlob
    scope: ToolScope


@dataclass(frozen=True, slots=True)
class FlowInfo:
    tag: str
    title: str
    description: str
    intents: tuple[str, ...]
    flow: CompiledFlow

    @property
    def steps(self) -> tuple[FlowStep, ...]:
        return self.flow.definition.steps


@dataclass(frozen=True, slots=True)
class PromptSection:
    tag: str
    kind: TagKind
    title: str
    text: str


@dataclass(frozen=True, slots=True)
class ToolMatch:
    """Which applied tags grant and deny one tool name (arguments aside)."""

    granted_by: tuple[ToolRule, ...]
    denied_by: tuple[ToolRule, ...]


@dataclass(frozen=True, slots=True)
class ResolvedContext:
    principal: Principal
    intent: str | None
    version: int
    """The tag-set version this was resolved from."""
    roles: tuple[str, ...]
    role_source: str
    """"identity provider", "org file", or "none"."""
    note: str
    """Why nothing applies, when nothing does (unknown org or user); otherwise empty."""
    tags: tuple[AppliedTag, ...]
    skipped: tuple[SkippedTag, ...]
    grants: tuple[ToolRule, ...]
    denials: tuple[ToolRule, ...]
    scopes: tuple[ScopeRule, ...]
    flows: tuple[FlowInfo, ...]
    sections: tuple[PromptSection, ...]
    prompt: str
    resource_grants: tuple[ToolRule, ...] = ()
    """allowed_resources entries (globs over URIs and URI templates)."""
    prompt_grants: tuple[ToolRule, ...] = ()
    """allowed_prompts entries (globs over namespaced prompt names)."""
    audited: tuple[ToolRule, ...] = ()
    """The grants of tags with `audit_arguments`: calls they admit are logged in full."""
    trusted: tuple[ToolRule, ...] = ()
    """trusted_output entries: tools whose results do not taint an agent session."""
    approvals: tuple[ToolRule, ...] = ()
    """needs_approval entries: tools whose calls in an agent session wait for the user."""
    budgets: tuple[BudgetLimit, ...] = ()
    """session_budgets entries, one per limit a tag sets."""
    _matches: dict[str, ToolMatch] = field(default_factory=dict, compare=False, repr=False)

    def match(self, tool: str) -> ToolMatch:
        """Grants and denials for `tool`, memoized: a context answers the same tools often."""
        found = self._matches.get(tool)
        if found is None:
            found = ToolMatch(
                granted_by=tuple(rule for rule in self.grants if rule.glob.matches(tool)),
                denied_by=tuple(rule for rule in self.denials if rule.glob.matches(tool)),
            )
            if len(self._matches) < 4096:
                self._matches[tool] = found
        return found

    def trusts_output(self, tool: str) -> bool:
        return any(rule.glob.matches(tool) for rule in self.trusted)

    def needs_approval(self, tool: str) -> bool:
        return any(rule.glob.matches(tool) for rule in self.approvals)

    def session_limits(self) -> dict[str, float]:
        """The tightest of each session limit the caller's tags set (engine/budgets.py
        applies them over gateway.yaml's)."""
        limits: dict[str, float] = {}
        for limit in self.budgets:
            known = limits.get(limit.name)
            limits[limit.name] = limit.value if known is None else min(known, limit.value)
        return limits

    def grants_resource(self, uri: str) -> bool:
        return any(rule.glob.matches(uri) for rule in self.resource_grants)

    def grants_prompt(self, name: str) -> bool:
        return any(rule.glob.matches(name) for rule in self.prompt_grants)

    def audits_arguments(self, tag: str | None, tool: str) -> bool:
        """Whether the tag that admitted a call to `tool` asks for its arguments in full."""
        return any(r.tag == tag and r.glob.matches(tool) for r in self.audited)

    def scopes_for(self, tag: str, tool: str) -> tuple[ScopeRule, ...]:
        return tuple(r for r in self.scopes if r.tag == tag and r.glob.matches(tool))
