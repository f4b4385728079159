"""The catalog: every upstream's tools under their public, namespaced names.

A public name is the upstream's prefix and the tool's own name (`crm__get_customer`). It
must be a valid MCP tool name (SEP-986: 1 to 128 of `A-Z a-z 0-9 _ - .`). Two upstreams
producing the same public name shadow nobody: both tools are left out and the clash is
reported naming both, at start-up as a configuration error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import mcp_types as types

TOOL_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


@dataclass(frozen=True, slots=True)
class CatalogTool:
    public_name: str
    upstream: str
    tool: types.Tool
    """As the upstream defines it, under its own name."""
    schema_key: str
    """The inputSchema as canonical JSON: computed once here, so that a call finds its
    validator without serializing the schema again."""


@dataclass(frozen=True, slots=True)
class Catalog:
    version: int
    tools: Mapping[str, CatalogTool]
    """By public name, sorted."""
    problems: tuple[str, ...] = field(default=())
    """Tools left out, and why (clashes, invalid names)."""


def build(version: int, offered: Mapping[str, tuple[str, tuple[types.Tool, ...]]]) -> Catalog:
    """A catalog of `offered`: upstream name → (its prefix, its tools)."""
    owners: dict[str, list[CatalogTool]] = {}
    problems: list[str] = []
    for upstream, (prefix, offered_tools) in sorted(offered.items()):
        for tool in offered_tools:
            public = prefix + tool.name
            if not TOOL_NAME.match(public):
                problems.append(
                    f"upstream {upstream!r}: tool {tool.name!r} left out: {public!r} is not a "
                    "valid MCP tool name (1 to 128 of A-Z a-z 0-9 _ - .)"
                )
                continue
            schema_key = json.dumps(tool.input_schema, sort_keys=True, separators=(",", ":"))
            owners.setdefault(public, []).append(CatalogTool(public, upstream, tool, schema_key))
    tools: dict[str, CatalogTool] = {}
    for public, claimants in sorted(owners.items()):
        names = sorted({c.upstream for c in claimants})
        if len(claimants) > 1:
            who = " and ".join(repr(n) for n in names) if len(names) > 1 else repr(names[0])
            problems.append(
                f"tool name {public!r} is offered by {who}; left out until the upstreams' "
                "prefixes tell them apart"
            )
            continue
        tools[public] = claimants[0]
    return Catalog(version, MappingProxyType(tools), tuple(problems))
