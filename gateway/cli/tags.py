"""`gateway tags resolve` and `gateway tags why`: explain tag resolution."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .. import jsoncodec
from ..errors import GatewayError
from ..settings import GatewayConfig
from ..tags import check
from ..tags.explain import context_json, context_text, decision_json, decision_text
from ..tags.policy import Fill
from ..upstreams.config import OWN_UPSTREAM, RESERVED_PREFIX, public_prefix
from ..upstreams.defaults import with_defaults
from ..upstreams.schemas import problem as schema_problem
from .common import (
    EXIT_NOT_PERMITTED,
    EXIT_OK,
    UsageError,
    ledger,
    open_config,
    principal,
    print_json,
)


def resolve(args: argparse.Namespace) -> int:
    _, manager = open_config(args)
    context = manager.resolve(principal(args), args.intent)
    if args.json:
        print_json(context_json(context))
    else:
        print(context_text(context))
    return EXIT_OK


def why(args: argparse.Namespace) -> int:
    arguments: dict[str, Any] | None = None
    if args.args is not None:
        try:
            parsed = jsoncodec.loads(args.args)  # strict, as /mcp is: no NaN or Infinity
        except ValueError as exc:
            raise UsageError(f"--args is not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise UsageError("--args must be a JSON object, e.g. '{\"amount\": 250}'")
        arguments = parsed
    config, manager = open_config(args)
    schema, where = _known_schema(config, args.tool)
    fill: Fill | None = None
    if schema is not None:
        fill = lambda paths, given: with_defaults(schema, given, paths)  # noqa: E731
    decision = check(manager.resolve(principal(args), args.intent), args.tool, arguments, fill)
    if args.json:
        print_json(
            {
                **decision_json(decision),
                "schema": where,
                "arguments": dict(decision.arguments) if decision.arguments is not None else None,
            }
        )
    else:
        print(decision_text(decision))
        print(f"inputSchema: {where}")
        if decision.arguments is not None and decision.arguments != arguments:
            print("sent as: " + json.dumps(decision.arguments, ensure_ascii=False))
    return EXIT_OK if decision.allowed else EXIT_NOT_PERMITTED


def _known_schema(config: GatewayConfig, tool: str) -> tuple[dict[str, Any] | None, str]:
    """The inputSchema `tool` had when the gateway last trusted its definition (recorded in
    tool-definitions.json), and how `tags why` says where it came from. Without it, an
    absent argument is taken to have no default, as the running gateway does for a tool
    it has not listed."""
    upstreams = config.settings.upstreams
    claims = sorted(
        [
            *((public_prefix(name, upstream), name) for name, upstream in upstreams.items()),
            (RESERVED_PREFIX, OWN_UPSTREAM),
        ],
        key=lambda claim: -len(claim[0]),
    )
    definitions = ledger(config)
    for prefix, name in claims:
        if not tool.startswith(prefix):
            continue
        try:
            definition = definitions.approved_definition(name, tool[len(prefix) :])
        except GatewayError:
            return None, f"unknown ({config.definitions_path} cannot be read)"
        if definition is None:
            continue
        schema = definition.get("inputSchema")
        if isinstance(schema, dict) and schema_problem(schema) is None:
            return schema, f"as upstream {name!r} last listed it (its declared defaults apply)"
    return None, (
        "unknown (no upstream listing recorded yet): an absent argument is taken to have no default"
    )
