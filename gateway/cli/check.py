"""`gateway check`: validate gateway.yaml and every tag file it names; with `--upstreams`,
also connect to every upstream once and check each flow's steps against the live catalog:
that each step's tool exists, that arguments written as literals fit its inputSchema (and
that templated ones leave out no required argument), and that a step retried is allowed
to be (its tool read-only or idempotent, or `retry_unsafe`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from ..tags.flows import FLOW_TOOLS_LISTED, CompiledFlow
from ..tags.loader import TagSet
from ..tags.templates import Expression, Pointer, Text
from ..upstreams import schemas
from ..upstreams.catalog import Catalog
from ..upstreams.config import RESERVED_PREFIX, public_prefix
from .common import EXIT_CONFIG, EXIT_OK, EXIT_UNHEALTHY, connected_pool, open_config


def check(args: argparse.Namespace) -> int:
    config, manager = open_config(args)
    tagset = manager.tagset
    print(
        f"ok: {config.path} and {len(tagset.files)} tag files "
        f"({len(tagset.orgs)} orgs, {tagset.tag_count} tags)"
    )
    if not args.upstreams:
        return EXIT_OK
    upstreams = config.settings.upstreams
    pool = connected_pool(upstreams)
    down = {
        name: state
        for name, state in pool.statuses().items()
        if name in upstreams and state.state.value not in ("ready", "degraded", "disabled")
    }
    for name, state in down.items():
        why = f"{state.state.value}{': ' + state.error if state.error else ''}"
        print(f"warning: upstream {name} is {why}: the steps of its tools are not checked")
    prefixes = [public_prefix(name, upstreams[name]) for name in down]
    problems = flow_problems(tagset, pool.catalog, prefixes)
    for problem in problems:
        print(problem)
    if problems:
        return EXIT_CONFIG
    if down:
        return EXIT_UNHEALTHY  # not every step could be judged
    flows = sum(1 for _ in _flows(tagset))
    print(f"ok: the steps of {flows} flows against {len(pool.catalog.tools)} live tools")
    return EXIT_OK


def _flows(tagset: TagSet) -> list[tuple[str, str, CompiledFlow]]:
    """Every flow once: (where, tag, flow)."""
    seen: dict[tuple[str, str], tuple[str, str, CompiledFlow]] = {}
    for org in tagset.orgs.values():
        for loaded in org.tags.values():
            if loaded.flow is not None:
                seen.setdefault(
                    (loaded.source, loaded.name), (loaded.where, loaded.name, loaded.flow)
                )
    return list(seen.values())


def flow_problems(tagset: TagSet, catalog: Catalog, down: Sequence[str] = ()) -> list[str]:
    """What is wrong with the flows' steps against `catalog`, one line each; `down`: the
    public prefixes of upstreams that could not be asked (their tools are not judged)."""
    found = []
    for where, tag, flow in _flows(tagset):
        for step in flow.steps:
            said = f"{where}: tag {tag!r}: step {step.id!r}: "
            if step.tool.startswith(FLOW_TOOLS_LISTED):
                found.append(f"{said}a flow's step cannot call a flow's tool ({step.tool})")
                continue
            if step.tool.startswith(RESERVED_PREFIX):
                continue  # the gateway's own tools, listed where it runs
            entry = catalog.tools.get(step.tool)
            if entry is None:
                if not any(step.tool.startswith(prefix) for prefix in down):
                    found.append(f"{said}no tool {step.tool!r} in the live catalog")
                continue
            problem = _argument_problem(entry.schema_key, entry.tool.input_schema, step.args)
            if problem is not None:
                found.append(f"{said}args do not fit {step.tool}'s inputSchema: {problem}")
        for unsafe in flow.unsafe_retries(
            lambda tool: (e := catalog.tools.get(tool)) is None or e.repeatable
        ):
            found.append(f"{where}: tag {tag!r}: {unsafe}")
    return found


def _argument_problem(schema_key: str, schema: dict[str, Any], args: Any) -> str | None:
    if not _templated(args):
        return schemas.argument_problem(schema_key, args)
    # Templated values are known only as the flow runs: which arguments are given is known,
    # the literal ones are checked, and text among text is text.
    required = schema.get("required") or []
    missing = [name for name in required if name not in args]
    if missing:
        return f"required argument{'s' if len(missing) > 1 else ''} {', '.join(missing)} left out"
    properties = schema.get("properties") or {}
    if schema.get("additionalProperties") is False:
        extra = [name for name in args if name not in properties]
        if extra:
            return f"{', '.join(extra)}: not among its arguments ({', '.join(properties)})"
    for name, value in args.items():
        declared = properties.get(name) if isinstance(properties, dict) else None
        if not isinstance(declared, dict):
            continue
        if isinstance(value, Text) and declared.get("type") not in (None, "string"):
            return f"{name}: a template with text around it makes text, not {declared['type']}"
        if not _templated(value):
            text = schemas.schema_text({"type": "object", "properties": {name: declared}})
            problem = schemas.argument_problem(text, {name: value}) if text else None
            if problem is not None:
                return problem
    return None


def _templated(value: Any) -> bool:
    if isinstance(value, Expression | Text | Pointer):
        return True
    if isinstance(value, dict):
        return any(_templated(inner) for inner in value.values())
    if isinstance(value, list):
        return any(_templated(inner) for inner in value)
    return False
