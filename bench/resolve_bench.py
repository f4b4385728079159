"""Tag Manager benchmark: loading, reloading, resolving and checking at scale.

Generates a realistic tags directory (by default 100 orgs x 100 tags, 10 users per org and
a `_shared.yaml`) into a temporary directory, then measures on this machine:

- load: `TagStore.open` of the whole directory, and `TagStore.reload` after every file
  changed, after one file changed (the loader keeps parsed files by content hash) and after
  every file was touched without a change;
- uncached resolve: `gateway.tags.resolve.resolve(tagset, principal, intent)` per call;
- cached resolve: `Resolver.resolve` per call, after every key was resolved once;
- check: `policy.check(context, tool, args)` for a granted call whose tag sets a scope.

Every measurement is repeated for `--rounds` rounds; the figures reported are the medians
over the rounds, with the spread (lowest and highest round). Targets are checked on the
medians, and the process exits with status 1 when one is missed. This is not a test: the
test suite never asserts on time.

Run it with `bench/run` (or `.venv/bin/python -m bench.resolve_bench`).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.measure import NS_PER_MS, NS_PER_S, NS_PER_US, Metric, figure, percentile
from gateway.principal import Principal
from gateway.tags.context import ResolvedContext
from gateway.tags.model import ArgumentConstraint, ToolScope
from gateway.tags.policy import check
from gateway.tags.resolve import Resolver, resolve
from gateway.tags.store import TagStore

# --------------------------------------------------------------------------------------
# Sizes and targets


@dataclass(frozen=True, slots=True)
class Sizes:
    orgs: int
    users_per_org: int
    uncached_calls: int
    cached_calls: int
    check_calls: int


FULL = Sizes(
    orgs=100, users_per_org=10, uncached_calls=2_000, cached_calls=200_000, check_calls=50_000
)
QUICK = Sizes(orgs=10, users_per_org=10, uncached_calls=300, cached_calls=20_000, check_calls=5_000)


METRICS: tuple[Metric, ...] = (
    Metric("load_s", "full load (TagStore.open)", NS_PER_S, "s", 2.0),
    Metric("reload_all_s", "reload, every file changed", NS_PER_S, "s", 2.0),
    Metric("reload_one_ms", "reload, one file changed", NS_PER_MS, "ms"),
    Metric("reload_touched_ms", "reload, every file touched only", NS_PER_MS, "ms"),
    Metric("uncached_p50_us", "resolve() uncached p50", NS_PER_US, "us", 5_000.0),
    Metric("uncached_p99_us", "resolve() uncached p99", NS_PER_US, "us"),
    Metric("cached_p50_us", "Resolver.resolve cached p50", NS_PER_US, "us", 20.0),
    Metric("cached_p99_us", "Resolver.resolve cached p99", NS_PER_US, "us"),
    Metric("clock_p50_us", "timer overhead p50 (empty)", NS_PER_US, "us"),
    Metric("check_p50_us", "policy.check with scope p50", NS_PER_US, "us"),
    Metric("check_p99_us", "policy.check with scope p99", NS_PER_US, "us"),
)

# --------------------------------------------------------------------------------------
# The generated configuration

SERVICES: dict[str, str] = {
    "crm": "customer",
    "orders": "order",
    "payments": "payment",
    "tickets": "ticket",
    "inventory": "item",
    "billing": "invoice",
    "ledger": "entry",
    "hr": "employee",
    "mail": "message",
    "calendar": "event",
    "files": "document",
    "analytics": "dashboard",
    "reports": "report",
    "shipping": "shipment",
    "catalog": "product",
}
OPERATIONS = ("get", "list", "search", "create", "update", "delete", "export", "approve")
TOOLS: tuple[str, ...] = (
    *(f"{service}__{op}_{obj}" for service, obj in SERVICES.items() for op in OPERATIONS),
    *("time__now", "time__convert", "docs__search", "docs__read_page", "reports__schedule"),
)
"""Every tool name the generated config refers to (the first 120 are service tools)."""

ROLES = (
    "intern",
    "agent",
    "senior_agent",
    "team_lead",
    "manager",
    "director",
    "finance",
    "auditor",
    "engineer",
    "ops",
    "sales",
    "hr_partner",
)
ROLE_LADDER = ("agent", "senior_agent", "team_lead", "manager", "director")
"""Each rung's role tag includes the rung below: an include chain four deep."""
INTENTS = ("refund", "report", "onboarding", "incident", "billing_question")
FUNCTION_AREAS = (
    "customer_lookup",
    "refunds",
    "order_care",
    "reconciliation",
    "ticket_triage",
    "stock_control",
    "payroll",
    "campaigns",
    "scheduling",
    "document_review",
    "reporting",
    "shipping_issues",
    "catalog_upkeep",
    "audit_trail",
)
TOOL_TAGS_PER_ORG = 57
FUNCTION_TAGS_PER_ORG = 28
FLOW_TAGS_PER_ORG = 2
TAGS_PER_ORG = 1 + len(ROLES) + FUNCTION_TAGS_PER_ORG + TOOL_TAGS_PER_ORG + FLOW_TAGS_PER_ORG

PATTERN_EXAMPLES: dict[str, str] = {
    "REF-[0-9]{6}": "REF-004217",
    "[A-Z]{3}-[0-9]{4}": "ABC-1234",
}
"""A value that fully matches each `pattern` the generator writes, for valid arguments."""

CONSTRAINTS: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "amount": lambda rng: {"min": 0.01, "max": rng.choice([100, 500, 1000, 5000])},
    "currency": lambda rng: {"enum": rng.sample(["USD", "EUR", "GBP", "JPY"], 2)},
    "ref": lambda rng: {"required": True, "pattern": "REF-[0-9]{6}"},
    "note": lambda rng: {"max_length": rng.choice([200, 500, 2000])},
    "force": lambda rng: {"forbidden": True},
    "limit": lambda rng: {"min": 1, "max": rng.choice([20, 50, 100])},
    "payment.amount": lambda rng: {"max": rng.choice([250, 1000])},
    "items.*.sku": lambda rng: {"pattern": "[A-Z]{3}-[0-9]{4}"},
}

TEXT = (
    "Answer in the customer's language and keep replies short.",
    "Quote the record's identifier in every answer so colleagues can find it.",
    "Never read out full payment details; the last four digits are enough.",
    "Escalate anything that looks like fraud to the team lead before acting.",
    "When unsure, look the record up again rather than relying on the conversation.",
    "Log every change you make with a one-line reason.",
    "Prefer the read-only tools; write only when the user asked for a change.",
)


def _text(rng: random.Random, sentences: int) -> str:
    return " ".join(rng.sample(TEXT, sentences)) + "\n"


def _tool_tag(rng: random.Random, index: int, users: Sequence[str]) -> dict[str, Any]:
    service = list(SERVICES)[index % len(SERVICES)]
    obj = SERVICES[service]
    shape = rng.randrange(4)
    if shape == 0:  # a few exact tools
        allowed = [f"{service}__{op}_{obj}" for op in rng.sample(OPERATIONS, 3)]
    elif shape == 1:  # read-only by glob
        allowed = [f"{service}__get_*", f"{service}__list_*", f"{service}__search_*"]
    elif shape == 2:  # the whole service
        allowed = [f"{service}__*"]
    else:  # a glob and an exact tool of a neighbouring service
        other = list(SERVICES)[(index + 1) % len(SERVICES)]
        allowed = [f"{service}__*_{obj}", f"{other}__get_{SERVICES[other]}"]
    config: dict[str, Any] = {"allowed_tools": allowed}
    if shape in (1, 2) or rng.random() < 0.2:
        config["denied_tools"] = rng.choice(
            [[f"{service}__delete_*"], [f"{service}__export_{obj}"], ["*__delete_*"]]
        )
    if rng.random() < 0.6:
        key = rng.choice(allowed)
        fields = rng.sample(sorted(CONSTRAINTS), rng.randint(2, 4))
        config["scopes"] = {key: {field: CONSTRAINTS[field](rng) for field in sorted(fields)}}
    if rng.random() < 0.1:
        config["assigned_users"] = [rng.choice(users)]
    elif rng.random() < 0.05:
        config["assigned_roles"] = [rng.choice(ROLES)]
    meta: dict[str, Any] = {"title": f"{service.title()} tools {index}"}
    if rng.random() < 0.1:
        meta["intents"] = rng.sample(INTENTS, 2)
    payload: dict[str, Any] = {"meta": meta, "config": config}
    if rng.random() < 0.5:
        payload["content"] = _text(rng, 1)
    return {"tag": f"tool_{service}_{index:02d}", "kind": "tool", "payload": payload}


def _function_tag(
    rng: random.Random, index: int, tool_names: Sequence[str], flow_names: Sequence[str]
) -> dict[str, Any]:
    area = FUNCTION_AREAS[index % len(FUNCTION_AREAS)]
    includes = rng.sample(list(tool_names), rng.randint(1, 3))
    if index > 0 and rng.random() < 0.4:  # only lower indexes: no cycles
        includes.append(f"fn_{FUNCTION_AREAS[(index - 1) % len(FUNCTION_AREAS)]}_{index - 1:02d}")
    if index < len(flow_names):
        includes.append(flow_names[index])
    meta: dict[str, Any] = {
        "title": area.replace("_", " ").capitalize(),
        "description": f"Everything needed for {area.replace('_', ' ')}.",
        "includes": includes,
    }
    if rng.random() < 0.2:
        meta["intents"] = rng.sample(INTENTS, 2)
    config: dict[str, Any] = {}
    if rng.random() < 0.2:
        service = rng.choice(list(SERVICES))
        config["allowed_tools"] = [f"{service}__search_{SERVICES[service]}"]
    payload: dict[str, Any] = {"meta": meta, "content": _text(rng, 2)}
    if config:
        payload["config"] = config
    return {"tag": f"fn_{area}_{index:02d}", "kind": "function", "payload": payload}


def _role_tag(rng: random.Random, role: str, function_names: Sequence[str]) -> dict[str, Any]:
    includes = rng.sample(list(function_names), rng.randint(2, 4))
    if role in ROLE_LADDER and role != ROLE_LADDER[0]:
        includes.insert(0, f"role_{ROLE_LADDER[ROLE_LADDER.index(role) - 1]}")
    if role == "auditor":
        includes.append("fn_shared_compliance")
    config: dict[str, Any] = {"assigned_roles": [role]}
    if role == "intern":
        config["denied_tools"] = ["payments__*", "*__delete_*", "ledger__*"]
    elif rng.random() < 0.25:
        config["denied_tools"] = [f"{rng.choice(list(SERVICES))}__delete_*"]
    meta: dict[str, Any] = {
        "title": role.replace("_", " ").capitalize(),
        "priority": ROLE_LADDER.index(role) * 5 if role in ROLE_LADDER else 0,
        "includes": includes,
    }
    return {"tag": f"role_{role}", "kind": "role", "payload": {"meta": meta, "config": config}}


def _flow_tag(rng: random.Random, name: str, intent: str) -> dict[str, Any]:
    steps = []
    for number, tool in enumerate(rng.sample(TOOLS[:120], 4), 1):
        step: dict[str, Any] = {
            "id": f"step{number}",
            "tool": tool,
            "description": f"Step {number}: {tool.replace('__', ' ').replace('_', ' ')}",
            "args": {"id": "{{input.id}}"},
        }
        if number == 4:
            step["when"] = "steps.step3.result.ok"
        steps.append(step)
    return {
        "tag": name,
        "kind": "flow",
        "payload": {
            "meta": {"title": name.removeprefix("flow_").capitalize(), "intents": [intent]},
            "config": {"allowed_tools": [steps[-1]["tool"]]},
            "content": {"description": f"The {intent} procedure.", "steps": steps},
        },
    }


def org_file(rng: random.Random, org: str, users: dict[str, list[str]]) -> dict[str, Any]:
    user_names = sorted(users)
    tools = [_tool_tag(rng, i, user_names) for i in range(TOOL_TAGS_PER_ORG)]
    flow_intents = rng.sample(INTENTS, FLOW_TAGS_PER_ORG)
    flows = [_flow_tag(rng, f"flow_{intent}", intent) for intent in flow_intents]
    tool_names = [t["tag"] for t in tools]
    functions = [
        _function_tag(rng, i, tool_names, [f["tag"] for f in flows])
        for i in range(FUNCTION_TAGS_PER_ORG)
    ]
    function_names = [f["tag"] for f in functions]
    roles = [_role_tag(rng, role, function_names) for role in ROLES]
    company = {
        "tag": f"company_{org}",
        "kind": "company",
        "payload": {
            "meta": {"title": f"Company {org}"},
            "config": {"assigned_users": ["*"]},
            "content": _text(rng, 3),
        },
    }
    tags = [company, *roles, *functions, *tools, *flows]
    assert len(tags) == TAGS_PER_ORG
    return {
        "org": org,
        "users": {
            name: {"name": name.replace("_", " ").title(), "roles": roles}
            for name, roles in users.items()
        },
        "tags": tags,
    }


def shared_file(orgs: Sequence[str]) -> dict[str, Any]:
    half = list(orgs[: max(1, len(orgs) // 2)])
    return {
        "tags": [
            {
                "tag": "tool_clock",
                "kind": "tool",
                "payload": {
                    "meta": {"title": "Clock"},
                    "config": {
                        "org_scope": ["*"],
                        "assigned_users": ["*"],
                        "allowed_tools": ["time__*"],
                    },
                    "content": "Use the clock tools for the current time.\n",
                },
            },
            {
                "tag": "tool_docs_search",
                "kind": "tool",
                "payload": {
                    "meta": {"title": "Documentation search"},
                    "config": {
                        "org_scope": half,
                        "assigned_roles": ["agent", "engineer"],
                        "allowed_tools": ["docs__search", "docs__read_page"],
                        "scopes": {
                            "docs__search": {"query": {"required": True, "max_length": 200}}
                        },
                    },
                },
            },
            {
                "tag": "tool_shared_reports",
                "kind": "tool",
                "payload": {
                    "meta": {"title": "Shared reports"},
                    "config": {
                        "org_scope": ["*"],
                        "assigned_roles": ["manager", "director"],
                        "allowed_tools": ["reports__get_*", "reports__schedule"],
                    },
                },
            },
            {
                "tag": "fn_shared_compliance",
                "kind": "function",
                "payload": {
                    "meta": {"title": "Compliance", "includes": ["tool_shared_reports"]},
                    "config": {"org_scope": ["*"]},
                    "content": "Keep an audit trail of every change you review.\n",
                },
            },
            {
                "tag": "flow_shared_incident",
                "kind": "flow",
                "payload": {
                    "meta": {"title": "Incident", "intents": ["incident"]},
                    "config": {"org_scope": ["*"], "assigned_roles": ["ops", "engineer"]},
                    "content": {
                        "steps": [
                            {"id": "open", "tool": "tickets__create_ticket"},
                            {"id": "notify", "tool": "mail__create_message"},
                        ]
                    },
                },
            },
        ]
    }


@dataclass(frozen=True, slots=True)
class Generated:
    directory: Path
    files: dict[Path, str]
    """Every file's original text."""
    users: tuple[tuple[str, str, tuple[str, ...]], ...]
    """(org, user, roles from the org file) for every user."""
    tag_count: int
    total_bytes: int


def generate(directory: Path, sizes: Sizes, seed: int) -> Generated:
    rng = random.Random(seed)
    orgs = [f"org_{index:03d}" for index in range(sizes.orgs)]
    dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    files: dict[Path, str] = {}
    users: list[tuple[str, str, tuple[str, ...]]] = []
    tag_count = 0
    for org in orgs:
        org_users = {
            f"user_{index:02d}": sorted(rng.sample(ROLES, rng.randint(2, 4)))
            for index in range(sizes.users_per_org)
        }
        users.extend((org, name, tuple(roles)) for name, roles in org_users.items())
        data = org_file(rng, org, org_users)
        tag_count += len(data["tags"])
        files[directory / f"{org}.yaml"] = yaml.dump(
            data, Dumper=dumper, sort_keys=False, default_flow_style=None, width=100
        )
    shared = shared_file(orgs)
    tag_count += len(shared["tags"])
    files[directory / "_shared.yaml"] = yaml.dump(
        shared, Dumper=dumper, sort_keys=False, default_flow_style=None, width=100
    )
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    return Generated(
        directory=directory,
        files=files,
        users=tuple(users),
        tag_count=tag_count,
        total_bytes=sum(len(text.encode()) for text in files.values()),
    )


# --------------------------------------------------------------------------------------
# Measuring


def _timed(action: Callable[[], object]) -> int:
    gc.collect()
    start = time.perf_counter_ns()
    action()
    return time.perf_counter_ns() - start


def _principals(gen: Generated, rng: random.Random) -> list[tuple[Principal, str | None]]:
    """Every user once per intent (and no intent). One user in five carries its roles
    from an identity provider, the others get the roles of their org file."""
    keys: list[tuple[Principal, str | None]] = []
    for org, user, roles in gen.users:
        idp = rng.random() < 0.2
        principal = Principal(user, org, tuple(rng.sample(roles, len(roles))) if idp else ())
        keys.extend((principal, intent) for intent in (None, *INTENTS))
    return keys


def _valid_value(constraint: ArgumentConstraint) -> tuple[bool, Any]:
    """(whether to send it, a value inside the constraint)."""
    if constraint.forbidden:
        return False, None
    if constraint.const is not None:
        return True, constraint.const
    if constraint.enum is not None:
        return True, constraint.enum[0]
    if constraint.pattern is not None:
        return True, PATTERN_EXAMPLES[constraint.pattern]
    if constraint.min is not None or constraint.max is not None:
        low = constraint.min if constraint.min is not None else 0
        high = constraint.max if constraint.max is not None else low + 10
        return True, (low + high) / 2
    if constraint.max_length is not None:
        return True, "x" * min(12, constraint.max_length)
    return True, "value"


def valid_arguments(scope: ToolScope) -> dict[str, Any]:
    """Arguments that satisfy every constraint of `scope` (as the generator writes them)."""
    arguments: dict[str, Any] = {}
    for path, constraint in sorted(scope.items()):
        send, value = _valid_value(constraint)
        if send:
            _place(arguments, path.split("."), value)
    return arguments


def _place(target: dict[str, Any], parts: list[str], value: Any) -> None:
    """Put `value` at the dotted path `parts`; a `*` part becomes a one-item array."""
    head, rest = parts[0], parts[1:]
    if not rest:
        target[head] = value
    elif rest[0] == "*":
        if len(rest) == 1:
            target[head] = [value]
        else:
            item: dict[str, Any] = {}
            target[head] = [item]
            _place(item, rest[1:], value)
    else:
        _place(target.setdefault(head, {}), rest, value)


def scoped_calls(
    contexts: Sequence[ResolvedContext], limit: int
) -> list[tuple[ResolvedContext, str, dict[str, Any]]]:
    """Up to `limit` (context, tool, args) calls that are allowed and admitted by a scope."""
    calls: list[tuple[ResolvedContext, str, dict[str, Any]]] = []
    for context in contexts:
        for rule in context.scopes:
            tools = [rule.glob.pattern] if rule.glob.is_exact else TOOLS
            tool = next((t for t in tools if rule.glob.matches(t)), None)
            if tool is None:
                continue
            arguments = valid_arguments(rule.scope)
            decision = check(context, tool, arguments)
            admitted = decision.admitted_by
            if decision.allowed and admitted is not None and context.scopes_for(admitted, tool):
                calls.append((context, tool, arguments))
                break
        if len(calls) >= limit:
            break
    return calls


def run_round(gen: Generated, sizes: Sizes, round_index: int, seed: int) -> dict[str, float]:
    """One round of every measurement; returns nanoseconds by metric key."""
    rng = random.Random(seed * 1_000 + round_index)
    result: dict[str, float] = {}

    # (a) load and reloads
    stores: list[TagStore] = []
    result["load_s"] = _timed(lambda: stores.append(TagStore.open(gen.directory)))
    store = stores[0]
    tagset = store.current
    assert tagset.tag_count == gen.tag_count, (tagset.tag_count, gen.tag_count)
    assert len(tagset.orgs) == sizes.orgs

    now = time.time()
    for path in gen.files:
        os.utime(path, (now, now))
    result["reload_touched_ms"] = _timed(lambda: _reload(store, changed=False))

    for path, text in gen.files.items():
        path.write_text(f"{text}# revision {round_index} (all)\n", encoding="utf-8")
    result["reload_all_s"] = _timed(lambda: _reload(store, changed=True))

    one = sorted(gen.files)[len(gen.files) // 2]
    one.write_text(f"{gen.files[one]}# revision {round_index} (one)\n", encoding="utf-8")
    result["reload_one_ms"] = _timed(lambda: _reload(store, changed=True))

    # (b) uncached resolve
    tagset = store.current
    keys = _principals(gen, rng)
    for principal, intent in rng.choices(keys, k=min(200, sizes.uncached_calls)):  # warm-up
        resolve(tagset, principal, intent)
    sample = rng.choices(keys, k=sizes.uncached_calls)
    times = [0] * len(sample)
    clock = time.perf_counter_ns
    gc.collect()
    for index, (principal, intent) in enumerate(sample):
        start = clock()
        resolve(tagset, principal, intent)
        times[index] = clock() - start
    times.sort()
    result["uncached_p50_us"] = percentile(times, 0.50)
    result["uncached_p99_us"] = percentile(times, 0.99)

    # (c) cached resolve: every key resolved once, then only hits
    resolver = Resolver(lambda: store.current)
    for principal, intent in keys:
        resolver.resolve(principal, intent)
    entries = len(resolver)
    calls = rng.choices(keys, k=sizes.cached_calls)
    times = [0] * len(calls)
    cached = resolver.resolve
    gc.collect()
    for index, (principal, intent) in enumerate(calls):
        start = clock()
        cached(principal, intent)
        times[index] = clock() - start
    assert len(resolver) == entries, "a cached call missed the cache"
    times.sort()
    result["cached_p50_us"] = percentile(times, 0.50)
    result["cached_p99_us"] = percentile(times, 0.99)

    for index in range(len(times)):  # the same loop with nothing timed in it
        start = clock()
        times[index] = clock() - start
    times.sort()
    result["clock_p50_us"] = percentile(times, 0.50)

    # (d) the permission check of a call with an argument scope
    contexts = [resolver.resolve(principal, None) for principal, intent in keys if intent is None]
    rng.shuffle(contexts)
    cases = scoped_calls(contexts, limit=200)
    assert cases, "no scoped call found in the generated config"
    for context, tool, arguments in cases:  # warm-up (fills each context's match memo)
        check(context, tool, arguments)
    picks = rng.choices(cases, k=sizes.check_calls)
    times = [0] * len(picks)
    gc.collect()
    for index, (context, tool, arguments) in enumerate(picks):
        start = clock()
        check(context, tool, arguments)
        times[index] = clock() - start
    times.sort()
    result["check_p50_us"] = percentile(times, 0.50)
    result["check_p99_us"] = percentile(times, 0.99)
    return result


def _reload(store: TagStore, changed: bool) -> None:
    outcome = store.reload()
    if not outcome.ok or outcome.changed != changed:
        raise RuntimeError(f"unexpected reload outcome {outcome} (expected changed={changed})")


# --------------------------------------------------------------------------------------
# Reporting


def report(rounds: list[dict[str, float]], gen: Generated, sizes: Sizes, args: Any) -> bool:
    """Print the table, PASS/FAIL per target and one JSON line; True when all targets hold."""
    summary: dict[str, dict[str, float | str | None]] = {}
    rows: list[tuple[str, str, str, str, str, str]] = []
    verdicts: list[tuple[Metric, float, bool]] = []
    for metric in METRICS:
        values = [r[metric.key] / metric.scale for r in rounds]
        median = statistics.median(values)
        summary[metric.key] = {
            "median": round(median, 6),
            "min": round(min(values), 6),
            "max": round(max(values), 6),
            "first": round(values[0], 6),
            "target": metric.target,
        }
        target = metric.target_text()
        if metric.target is not None:
            verdicts.append((metric, median, metric.met(median)))
        rows.append(
            (
                metric.label,
                f"{figure(median)} {metric.unit}",
                f"{figure(min(values))}-{figure(max(values))}",
                f"{figure(values[0])}",
                target,
                "" if metric.target is None else ("PASS" if metric.met(median) else "FAIL"),
            )
        )
    header = ("measurement", "median", "spread (min-max)", "round 1", "target", "")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    print()
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print()
    for metric, median, ok in verdicts:
        verdict = "PASS" if ok else "FAIL"
        print(
            f"{verdict} {metric.key}: median {figure(median)} {metric.unit} "
            f"(target {metric.target_text()})"
        )
    print(
        json.dumps(
            {
                "benchmark": "resolve_bench",
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "quick": args.quick,
                "rounds": len(rounds),
                "seed": args.seed,
                "orgs": sizes.orgs,
                "users": len(gen.users),
                "tags": gen.tag_count,
                "config_bytes": gen.total_bytes,
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "metrics": summary,
                "pass": all(ok for _, _, ok in verdicts),
            },
            sort_keys=False,
        )
    )
    return all(ok for _, _, ok in verdicts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.resolve_bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds to take medians over")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated config")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 100:
        parser.error("--rounds must be between 1 and 100")
    sizes = QUICK if args.quick else FULL

    with tempfile.TemporaryDirectory(prefix="resolve-bench-") as temp:
        directory = Path(temp) / "orgs"
        directory.mkdir()
        gen = generate(directory, sizes, args.seed)
        print(
            f"resolve_bench: {len(gen.files)} files ({gen.total_bytes / 1e6:.1f} MB), "
            f"{gen.tag_count} tags, {sizes.orgs} orgs, {len(gen.users)} users; "
            f"{args.rounds} rounds; {sizes.uncached_calls} uncached, {sizes.cached_calls} "
            f"cached and {sizes.check_calls} check calls per round; "
            f"Python {platform.python_version()}, {os.cpu_count()} CPUs",
            flush=True,
        )
        rounds: list[dict[str, float]] = []
        for index in range(args.rounds):
            started = time.perf_counter()
            rounds.append(run_round(gen, sizes, index, args.seed))
            print(
                f"  round {index + 1}/{args.rounds}: load "
                f"{rounds[-1]['load_s'] / NS_PER_S:.2f} s, cached p50 "
                f"{rounds[-1]['cached_p50_us'] / NS_PER_US:.2f} us "
                f"({time.perf_counter() - started:.1f} s)",
                flush=True,
            )
        ok = report(rounds, gen, sizes, args)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
