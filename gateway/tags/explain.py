"""Explanations of resolution and decisions, as JSON-ready data and as readable text."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .context import ResolvedContext, ToolRule
from .policy import Decision


def context_json(context: ResolvedContext) -> dict[str, Any]:
    principal = context.principal
    return {
        "principal": {
            "user": principal.user_id,
            "org": principal.org_id,
            "roles": list(context.roles),
            "role_source": context.role_source,
        },
        "intent": context.intent,
        "version": context.version,
        "note": context.note,
        "tags": [
            {
                "tag": t.name,
                "kind": t.kind.value,
                "title": t.title,
                "priority": t.priority,
                "where": t.where,
                "reasons": list(t.reasons),
            }
            for t in context.tags
        ],
        "skipped": [{"tag": s.name, "reason": s.reason} for s in context.skipped],
        "tools": [
            {"tool": pattern, "granted_by": tags} for pattern, tags in _by_pattern(context.grants)
        ],
        "denied": [
            {"tool": pattern, "denied_by": tags} for pattern, tags in _by_pattern(context.denials)
        ],
        "resources": [
            {"resource": pattern, "granted_by": tags}
            for pattern, tags in _by_pattern(context.resource_grants)
        ],
        "prompts": [
            {"prompt": pattern, "granted_by": tags}
            for pattern, tags in _by_pattern(context.prompt_grants)
        ],
        "trusted_output": [
            {"tool": pattern, "trusted_by": tags} for pattern, tags in _by_pattern(context.trusted)
        ],
        "needs_approval": [
            {"tool": pattern, "asked_by": tags} for pattern, tags in _by_pattern(context.approvals)
        ],
        "session_budgets": [
            {"limit": limit.name, "value": limit.value, "tag": limit.tag}
            for limit in context.budgets
        ],
        "scopes": [
            {
                "tool": rule.glob.pattern,
                "tag": rule.tag,
                "arguments": {
                    path: constraint.model_dump(exclude_defaults=True)
                    for path, constraint in rule.scope.items()
                },
            }
            for rule in context.scopes
        ],
        "flows": [
            {
                "tag": f.tag,
                "title": f.title,
                "description": f.description,
                "intents": list(f.intents),
                "steps": [
                    {"id": s.id, "tool": s.tool, "description": s.description} for s in f.steps
                ],
            }
            for f in context.flows
        ],
        "sections": [
            {"tag": s.tag, "kind": s.kind.value, "title": s.title} for s in context.sections
        ],
        "prompt": context.prompt,
    }


def decision_json(decision: Decision) -> dict[str, Any]:
    return {
        "tool": decision.tool,
        "allowed": decision.allowed,
        "outcome": decision.outcome.value,
        "reason": decision.reason,
        "granted_by": list(decision.granted_by),
        "denied_by": list(decision.denied_by),
        "admitted_by": decision.admitted_by,
        "violations": [
            {"tag": v.tag, "argument": v.path, "reason": v.message} for v in decision.violations
        ],
    }


def context_text(context: ResolvedContext) -> str:
    data = context_json(context)
    principal = data["principal"]
    roles = ", ".join(principal["roles"]) or "-"
    out = [
        f"user {principal['user']} in org {principal['org']}"
        f" (roles: {roles}, from {principal['role_source']})"
        f"; intent: {context.intent or '-'}; config version {context.version}",
    ]
    if context.note:
        out.append(f"note: {context.note}")
    out += ["", "Applied tags"]
    out.append(
        _table(
            ["tag", "kind", "priority", "why", "defined at"],
            [
                [t["tag"], t["kind"], str(t["priority"]), "; ".join(t["reasons"]), t["where"]]
                for t in data["tags"]
            ],
        )
    )
    if data["skipped"]:
        out += ["", "Assigned but not applied"]
        out.append(_table(["tag", "why not"], [[s["tag"], s["reason"]] for s in data["skipped"]]))
    out += ["", "Granted tools"]
    out.append(
        _table(
            ["tool", "granted by"], [[t["tool"], ", ".join(t["granted_by"])] for t in data["tools"]]
        )
    )
    out += ["", "Denied tools (a denial wins over any grant)"]
    out.append(
        _table(
            ["tool", "denied by"], [[t["tool"], ", ".join(t["denied_by"])] for t in data["denied"]]
        )
    )
    out += ["", "Argument scopes (a call must fit the scope of at least one granting tag)"]
    rows = [
        [s["tool"], s["tag"], path, _constraint_text(c)]
        for s in data["scopes"]
        for path, c in s["arguments"].items()
    ]
    out.append(_table(["tool", "tag", "argument", "constraint"], rows))
    out += ["", "Flows"]
    out.append(
        _table(
            ["flow", "intents", "steps"],
            [
                [f["tag"], ", ".join(f["intents"]) or "-", " -> ".join(s["id"] for s in f["steps"])]
                for f in data["flows"]
            ],
        )
    )
    out += ["", "System prompt (sections from: " + _sections(data) + ")", ""]
    out.append(context.prompt or "(empty)")
    return "\n".join(out)


def decision_text(decision: Decision) -> str:
    verdict = "PERMITTED" if decision.allowed else "NOT PERMITTED"
    return f"{verdict}: {decision.tool}\n{decision.reason}"


def _by_pattern(rules: Sequence[ToolRule]) -> list[tuple[str, list[str]]]:
    grouped: dict[str, list[str]] = {}
    for rule in rules:
        tags = grouped.setdefault(rule.pattern, [])
        if rule.tag not in tags:
            tags.append(rule.tag)
    return sorted(grouped.items())


def _sections(data: dict[str, Any]) -> str:
    return ", ".join(f"{s['tag']}" for s in data["sections"]) or "none"


def _constraint_text(constraint: dict[str, Any]) -> str:
    parts = [flag for flag in ("required", "forbidden") if constraint.get(flag)]
    for key in ("min", "max", "max_length"):
        if key in constraint:
            parts.append(f"{key} {constraint[key]}")
    if "enum" in constraint:
        parts.append("one of " + ", ".join(json.dumps(v) for v in constraint["enum"]))
    if "pattern" in constraint:
        parts.append(f"pattern {constraint['pattern']}")
    if "const" in constraint:
        parts.append(f"equal to {json.dumps(constraint['const'])}")
    return ", ".join(parts)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "  (none)"
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  " + "  ".join("-" * w for w in widths))
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)
