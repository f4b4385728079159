"""Resolution: (principal, intent) → ResolvedContext, deterministic and explained.

Which tags apply:
- directly, when `assigned_users` names the user (or is `*`: every known user of the org)
  or `assigned_roles` names one of the user's roles;
- by inclusion, when an applied tag lists it in `includes` (transitively);
- never outside the org: an org sees its own file's tags and the shared tags whose
  `org_scope` names it;
- a tag with `intents` applies only when the requested intent is one of them; with no
  intent requested, it applies (an intent narrows, it never widens).

A user the org does not know (not in its file, and no roles from an identity provider)
gets nothing: default deny.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from ..principal import Principal
from .context import (
    AppliedTag,
    BudgetLimit,
    FlowInfo,
    PromptSection,
    ResolvedContext,
    ScopeRule,
    SkippedTag,
    ToolRule,
)
from .loader import LoadedTag, OrgTags, TagSet
from .model import KIND_ORDER, ORG_WIDE, FlowDefinition, TagKind


def resolve(tagset: TagSet, principal: Principal, intent: str | None = None) -> ResolvedContext:
    """Resolve without caching. Pure: the same inputs give an equal context."""
    org = tagset.orgs.get(principal.org_id)
    if org is None:
        return _empty(tagset, principal, intent, f"org {principal.org_id!r} is not configured")
    user = org.users.get(principal.user_id)
    if principal.roles:
        roles, role_source = tuple(sorted(set(principal.roles))), "identity provider"
    elif user is not None:
        roles, role_source = tuple(sorted(set(user.roles))), "org file"
    else:
        return _empty(
            tagset,
            principal,
            intent,
            f"user {principal.user_id!r} is not known in org {principal.org_id!r}",
        )
    reasons, skipped = _applied(org, principal.user_id, set(roles), intent)
    applied = sorted(
        (org.tags[name] for name in reasons),
        key=lambda t: (KIND_ORDER[t.tag.kind], -t.tag.payload.meta.priority, t.name),
    )
    return _assemble(tagset, principal, intent, roles, role_source, applied, reasons, skipped)


def _applied(
    org: OrgTags, user_id: str, roles: set[str], intent: str | None
) -> tuple[dict[str, list[str]], list[SkippedTag]]:
    reasons: dict[str, list[str]] = {}
    skipped: dict[str, SkippedTag] = {}

    def fits(loaded: LoadedTag) -> bool:
        intents = loaded.tag.payload.meta.intents
        if intent is None or not intents or intent in intents:
            return True
        skipped.setdefault(
            loaded.name,
            SkippedTag(loaded.name, f"intents {', '.join(intents)} do not include {intent!r}"),
        )
        return False

    for loaded in org.tags.values():
        config = loaded.tag.payload.config
        why: list[str] = []
        if user_id in config.assigned_users:
            why.append(f"assigned user {user_id}")
        if ORG_WIDE in config.assigned_users:
            why.append("org-wide (assigned_users: '*')")
        why.extend(f"assigned role {role}" for role in config.assigned_roles if role in roles)
        if why and fits(loaded):
            reasons[loaded.name] = why
    # Breadth-first over includes, in name order, so that reasons come out the same each time.
    queue = list(reasons)
    while queue:
        parent = queue.pop(0)
        for name in org.tags[parent].tag.payload.meta.includes:
            included = org.tags[name]
            if name in reasons:
                if f"included by {parent}" not in reasons[name]:
                    reasons[name].append(f"included by {parent}")
            elif fits(included):
                reasons[name] = [f"included by {parent}"]
                queue.append(name)
    return reasons, [s for name, s in sorted(skipped.items()) if name not in reasons]


def _assemble(
    tagset: TagSet,
    principal: Principal,
    intent: str | None,
    roles: tuple[str, ...],
    role_source: str,
    applied: list[LoadedTag],
    reasons: dict[str, list[str]],
    skipped: list[SkippedTag],
) -> ResolvedContext:
    grants: list[ToolRule] = []
    denials: list[ToolRule] = []
    resource_grants: list[ToolRule] = []
    prompt_grants: list[ToolRule] = []
    audited: list[ToolRule] = []
    trusted: list[ToolRule] = []
    approvals: list[ToolRule] = []
    budgets: list[BudgetLimit] = []
    scopes: list[ScopeRule] = []
    flows: list[FlowInfo] = []
    sections: list[PromptSection] = []
    for loaded in applied:
        tag = loaded.tag
        grants.extend(ToolRule(loaded.name, glob) for glob in loaded.allowed)
        denials.extend(ToolRule(loaded.name, glob) for glob in loaded.denied)
        resource_grants.extend(ToolRule(loaded.name, glob) for glob in loaded.resources)
        prompt_grants.extend(ToolRule(loaded.name, glob) for glob in loaded.prompts)
        trusted.extend(ToolRule(loaded.name, glob) for glob in loaded.trusted)
        approvals.extend(ToolRule(loaded.name, glob) for glob in loaded.approvals)
        limits = tag.payload.config.session_budgets
        if limits is not None:
            budgets.extend(
                BudgetLimit(loaded.name, name, value)
                for name, value in limits.model_dump(exclude_none=True).items()
            )
        if tag.payload.config.audit_arguments:
            audited.extend(ToolRule(loaded.name, glob) for glob in loaded.allowed)
        scopes.extend(ScopeRule(loaded.name, glob, scope) for glob, scope in loaded.scopes)
        content = tag.payload.content
        if isinstance(content, FlowDefinition):
            assert loaded.flow is not None, "a flow tag loads compiled"
            flows.append(
                FlowInfo(
                    loaded.name,
                    tag.title,
                    content.description or tag.payload.meta.description,
                    tag.payload.meta.intents,
                    loaded.flow,
                )
            )
            text = _flow_text(loaded.name, content)
        else:
            text = content.strip()
        if text:
            sections.append(PromptSection(loaded.name, tag.kind, tag.title, text))
    return ResolvedContext(
        principal=principal,
        intent=intent,
        version=tagset.version,
        roles=roles,
        role_source=role_source,
        note="" if applied else "no tag applies to this user",
        tags=tuple(
            AppliedTag(
                t.name,
                t.tag.kind,
                t.tag.title,
                t.tag.payload.meta.priority,
                t.where,
                tuple(reasons[t.name]),
            )
            for t in applied
        ),
        skipped=tuple(skipped),
        grants=tuple(grants),
        denials=tuple(denials),
        scopes=tuple(scopes),
        flows=tuple(flows),
        sections=tuple(sections),
        prompt="\n\n".join(f"## {s.title}\n\n{s.text}" for s in sections),
        resource_grants=tuple(resource_grants),
        prompt_grants=tuple(prompt_grants),
        audited=tuple(audited),
        trusted=tuple(trusted),
        approvals=tuple(approvals),
        budgets=tuple(budgets),
    )


def _flow_text(name: str, flow: FlowDefinition) -> str:
    lines = [flow.description.strip()] if flow.description.strip() else []
    properties = (flow.inputs or {}).get("properties") or {}
    listed = (flow.inputs or {}).get("required")
    required = set(listed) if isinstance(listed, list) else set()
    if isinstance(properties, dict) and properties:
        fields = [
            f"{field} ({(schema or {}).get('type', 'any') if isinstance(schema, dict) else 'any'}"
            f"{', required' if field in required else ''})"
            for field, schema in properties.items()
        ]
        lines.append(f"Inputs: {', '.join(fields)}.")
    lines.append(
        f'Run it with a plan envelope that names it: flow "{name}", with its inputs. Steps:'
    )
    for number, step in enumerate(flow.steps, 1):
        what = step.description or step.id
        lines.append(f"{number}. {what} (tool {step.tool})")
    return "\n".join(lines)


def _empty(tagset: TagSet, principal: Principal, intent: str | None, note: str) -> ResolvedContext:
    return ResolvedContext(
        principal=principal,
        intent=intent,
        version=tagset.version,
        roles=(),
        role_source="none",
        note=note,
        tags=(),
        skipped=(),
        grants=(),
        denials=(),
        scopes=(),
        flows=(),
        sections=(),
        prompt="",
    )


CacheKey = tuple[str, str, tuple[str, ...], str | None]


class Resolver:
    """Resolution with an in-process LRU cache keyed by (org, user, roles, intent).

    The cache belongs to one tag-set version: when the source returns a new version, every
    entry is dropped before anything is answered, so no stale permission is ever served.
    """

    def __init__(self, source: Callable[[], TagSet], max_entries: int = 50_000) -> None:
        self._source = source
        self._max = max_entries
        self._cache: OrderedDict[CacheKey, ResolvedContext] = OrderedDict()
        self._version: int | None = None

    def resolve(self, principal: Principal, intent: str | None = None) -> ResolvedContext:
        tagset = self._source()
        if tagset.version != self._version:
            self._cache.clear()
            self._version = tagset.version
        roles = principal.roles if len(principal.roles) < 2 else tuple(sorted(principal.roles))
        key = (principal.org_id, principal.user_id, roles, intent)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        context = resolve(tagset, principal, intent)
        self._cache[key] = context
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return context

    def clear(self) -> None:
        self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)


__all__ = ["Resolver", "TagKind", "resolve"]
