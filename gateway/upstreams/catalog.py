"""The catalog: everything the upstreams offer, under the names callers see.

A tool's or prompt's public name is the upstream's prefix and its own name
(`crm__get_customer`); a tool's must be a valid MCP tool name (SEP-986: 1 to 128 of
`A-Z a-z 0-9 _ - .`). Resources keep their URIs, which already say where they are; a read
is routed back by the URI, or by the resource template it matches.

Nothing shadows anything: when two upstreams produce the same public name, the same
resource URI or the same URI template, both are left out and the clash is reported naming
both (at start-up, as a configuration error). Names under the reserved prefix `gateway__`
are the gateway's own tools' alone: another upstream's tool or prompt that comes out
under one (an empty prefix passing `gateway__evil` through) is left out, with the reason,
and the own tool stays.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, TypeVar

import mcp_types as types
from mcp import UriTemplate
from mcp.shared.uri_template import InvalidUriTemplate

from .config import OWN_UPSTREAM, RESERVED_PREFIX
from .listing import Offer

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
    listed: types.Tool
    """What callers are shown: the upstream's definition under the public name."""

    @property
    def read_only(self) -> bool:
        """Annotated read-only (the upstream's hint)."""
        notes = self.tool.annotations
        return bool(notes and notes.read_only_hint)

    @property
    def repeatable(self) -> bool:
        """Annotated read-only or idempotent: safe to send again after a lost connection."""
        notes = self.tool.annotations
        return self.read_only or bool(notes and notes.idempotent_hint)


@dataclass(frozen=True, slots=True)
class CatalogResource:
    upstream: str
    resource: types.Resource


@dataclass(frozen=True, slots=True)
class CatalogTemplate:
    upstream: str
    template: types.ResourceTemplate
    matcher: UriTemplate


@dataclass(frozen=True, slots=True)
class CatalogPrompt:
    public_name: str
    upstream: str
    prompt: types.Prompt
    """As the upstream defines it, under its own name."""
    listed: types.Prompt
    """What callers are shown: the upstream's definition under the public name."""


@dataclass(frozen=True, slots=True)
class Catalog:
    version: int
    tools: Mapping[str, CatalogTool]
    """By public name, sorted."""
    resources: Mapping[str, CatalogResource] = field(default_factory=dict)
    """By URI, sorted."""
    templates: tuple[CatalogTemplate, ...] = ()
    """Sorted by URI template."""
    prompts: Mapping[str, CatalogPrompt] = field(default_factory=dict)
    """By public name, sorted."""
    clashes: tuple[str, ...] = ()
    """Names, URIs or templates that two upstreams both produce (all left out)."""
    problems: tuple[str, ...] = ()
    """Everything left out, and why: the clashes and invalid names."""
    quarantined: Mapping[str, str] = field(default_factory=dict)
    """Tools hidden until an admin approves their changed definition: public name → why."""

    def resource_upstream(self, uri: str) -> str | None:
        """The upstream to read `uri` from: the one listing it, else the one whose
        template it matches. Raises AmbiguousResource when templates of several match."""
        listed = self.resources.get(uri)
        if listed is not None:
            return listed.upstream
        matching = sorted({t.upstream for t in self.templates if t.matcher.match(uri) is not None})
        if len(matching) > 1:
            raise AmbiguousResource(uri, matching)
        return matching[0] if matching else None


class AmbiguousResource(LookupError):
    def __init__(self, uri: str, upstreams: list[str]) -> None:
        self.uri = uri
        self.upstreams = upstreams
        who = " and ".join(repr(name) for name in upstreams)
        super().__init__(f"resource {uri!r} matches templates of {who}; not read from either")


def build(
    version: int,
    offered: Mapping[str, tuple[str, Offer]],
    quarantined: Mapping[str, str] | None = None,
) -> Catalog:
    """A catalog of `offered`: upstream name → (its prefix, its offer)."""
    problems: list[str] = []
    clashes: list[str] = []
    tool_claims: list[tuple[str, CatalogTool]] = []
    resource_claims: list[tuple[str, CatalogResource]] = []
    template_claims: list[tuple[str, CatalogTemplate]] = []
    prompt_claims: list[tuple[str, CatalogPrompt]] = []
    for upstream, (prefix, offer) in sorted(offered.items()):
        problems.extend(
            text if text.startswith("upstream ") else f"upstream {upstream!r}: {text}"
            for text in offer.problems
        )
        for tool in offer.tools:
            public = prefix + tool.name
            if public.startswith(RESERVED_PREFIX) and upstream != OWN_UPSTREAM:
                problems.append(_reserved(upstream, "tool", tool.name, public))
                continue
            if not TOOL_NAME.match(public):
                problems.append(
                    f"upstream {upstream!r}: tool {tool.name!r} left out: {public!r} is not a "
                    "valid MCP tool name (1 to 128 of A-Z a-z 0-9 _ - .)"
                )
                continue
            schema_key = json.dumps(tool.input_schema, sort_keys=True, separators=(",", ":"))
            listed = tool if public == tool.name else tool.model_copy(update={"name": public})
            tool_claims.append((public, CatalogTool(public, upstream, tool, schema_key, listed)))
        for resource in offer.resources:
            resource_claims.append((resource.uri, CatalogResource(upstream, resource)))
        for template in offer.templates:
            try:
                matcher = UriTemplate.parse(template.uri_template)
            except InvalidUriTemplate as exc:
                problems.append(
                    f"upstream {upstream!r}: resource template {template.uri_template!r} left "
                    f"out: {exc}"
                )
                continue
            claim = CatalogTemplate(upstream, template, matcher)
            template_claims.append((template.uri_template, claim))
        for prompt in offer.prompts:
            public = prefix + prompt.name
            if public.startswith(RESERVED_PREFIX) and upstream != OWN_UPSTREAM:
                problems.append(_reserved(upstream, "prompt", prompt.name, public))
                continue
            shown = prompt if public == prompt.name else prompt.model_copy(update={"name": public})
            prompt_claims.append((public, CatalogPrompt(public, upstream, prompt, shown)))

    tools = _settle("tool name", tool_claims, clashes)
    resources = _settle("resource", resource_claims, clashes)
    templates = _settle("resource template", template_claims, clashes)
    prompts = _settle("prompt name", prompt_claims, clashes)
    return Catalog(
        version,
        MappingProxyType(tools),
        MappingProxyType(resources),
        tuple(templates.values()),
        MappingProxyType(prompts),
        tuple(clashes),
        tuple(problems + clashes),
        MappingProxyType(dict(sorted((quarantined or {}).items()))),
    )


def _reserved(upstream: str, kind: str, name: str, public: str) -> str:
    return (
        f"upstream {upstream!r}: {kind} {name!r} left out: {public!r} starts with "
        f"{RESERVED_PREFIX!r}, which is reserved for the gateway's own tools"
    )


class _Claim(Protocol):
    @property
    def upstream(self) -> str: ...


C = TypeVar("C", bound=_Claim)


def _settle(kind: str, claims: Iterable[tuple[str, C]], clashes: list[str]) -> dict[str, C]:
    """The claims to keys that only one claimant makes, sorted by key; the others are told
    in `clashes`."""
    by_key: dict[str, list[C]] = {}
    for key, claim in claims:
        by_key.setdefault(key, []).append(claim)
    won: dict[str, C] = {}
    for key, claimants in sorted(by_key.items()):
        if len(claimants) == 1:
            won[key] = claimants[0]
            continue
        names = sorted({c.upstream for c in claimants})
        quoted = [repr(name) for name in names]
        who = (
            ", ".join(quoted[:-1]) + f" and {quoted[-1]}"
            if len(names) > 1
            else f"{quoted[0]} twice"
        )
        remedy = (
            "the upstreams' prefixes tell them apart"
            if kind.endswith("name")
            else "only one upstream offers it"
        )
        clashes.append(f"{kind} {key!r} is offered by {who}; left out until {remedy}")
    return won
