"""What one caller sees: the catalog filtered by the caller's ResolvedContext.

A tool is listed when the one permission check (`policy.check`, without arguments) grants
it. Resources, resource templates and prompts are shown from the upstreams of which the
caller may use at least one tool (an upstream the caller has no business with stays
invisible as a whole), and those its tags grant by `allowed_resources` (URIs or URI
templates) and `allowed_prompts` (namespaced names). On top of that, every caller sees
its own assembled tag context, as the prompt `context` and the resource
`gateway://context`.

A view is computed once per (caller, tag version, catalog version) and shared by every
request of that caller until either version changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import mcp_types as types

from ..flows.tools import flow_listing
from ..principal import Principal
from ..tags.context import ResolvedContext
from ..tags.flows import FLOW_TOOLS_LISTED, public_flow_tool
from ..tags.policy import check
from ..upstreams.catalog import Catalog, CatalogTemplate

CONTEXT_PROMPT = "context"
CONTEXT_URI = "gateway://context"

_CONTEXT_PROMPT = types.Prompt(
    name=CONTEXT_PROMPT,
    title="Your instructions",
    description="The company, role and function instructions that apply to you, "
    "assembled from your organisation's tags.",
)
_CONTEXT_RESOURCE = types.Resource(
    uri=CONTEXT_URI,
    name="context",
    title="Your instructions",
    description="The instructions assembled from your organisation's tags.",
    mime_type="text/markdown",
)


@dataclass(frozen=True, slots=True)
class View:
    context: ResolvedContext
    catalog: Catalog
    tools: tuple[types.Tool, ...]
    resources: tuple[types.Resource, ...]
    templates: tuple[types.ResourceTemplate, ...]
    prompts: tuple[types.Prompt, ...]
    upstreams: frozenset[str]
    """The upstreams whose resources and prompts the caller sees."""
    tools_by_name: Mapping[str, types.Tool]
    wire: dict[tuple[str, str], bytes] = field(default_factory=dict, compare=False, repr=False)
    """Listings as sent, by (method, protocol version): made once per view (modern_calls.py)."""

    def shows_resource(self, uri: str) -> bool:
        """Whether `uri` is an upstream's resource that this caller may read."""
        if uri == CONTEXT_URI:
            return False  # the gateway's own, answered without an upstream
        listed = self.catalog.resources.get(uri)
        if listed is not None:
            return listed.upstream in self.upstreams or self.context.grants_resource(uri)
        return any(
            t.matcher.match(uri) is not None and self._shows_template(t)
            for t in self.catalog.templates
        )

    def _shows_template(self, entry: CatalogTemplate) -> bool:
        return entry.upstream in self.upstreams or self.context.grants_resource(
            entry.template.uri_template
        )

    def shows_prompt(self, name: str) -> bool:
        """Whether `name` is an upstream's prompt that this caller may get."""
        if name == CONTEXT_PROMPT:
            return False  # the gateway's own, answered without an upstream
        entry = self.catalog.prompts.get(name)
        return entry is not None and (
            entry.upstream in self.upstreams or self.context.grants_prompt(name)
        )

    def template_upstream(self, uri_template: str) -> str | None:
        """The upstream of a listed resource template this caller sees."""
        for entry in self.catalog.templates:
            if entry.template.uri_template == uri_template and self._shows_template(entry):
                return entry.upstream
        return None

    def differs(self, other: View) -> tuple[bool, bool, bool]:
        """Whether the (tools, resources, prompts) a client was shown have changed."""
        return (
            self.tools != other.tools,
            (self.resources, self.templates) != (other.resources, other.templates),
            self.prompts != other.prompts,
        )


class Views:
    def __init__(
        self,
        resolve: Callable[[Principal], ResolvedContext],
        catalog: Callable[[], Catalog],
        max_entries: int = 10_000,
    ) -> None:
        self._resolve = resolve
        self._catalog = catalog
        self._max_entries = max_entries
        self._cache: dict[Principal, View] = {}

    def context(self, principal: Principal) -> ResolvedContext:
        return self._resolve(principal)

    def view(self, principal: Principal) -> View:
        context = self._resolve(principal)
        catalog = self._catalog()
        cached = self._cache.get(principal)
        if cached is not None and cached.context is context and cached.catalog is catalog:
            return cached
        view = build_view(context, catalog)
        if len(self._cache) >= self._max_entries:
            self._cache.clear()  # versions moved on for most entries anyway
        self._cache[principal] = view
        return view


def build_view(context: ResolvedContext, catalog: Catalog) -> View:
    tools = []
    upstreams = set()
    # A flow's tool as its caller's org wrote it: orgs may have flows of one name.
    flows = {public_flow_tool(f.tag): f for f in context.flows} if context.flows else {}
    for name, entry in catalog.tools.items():
        if check(context, name).allowed:
            if name.startswith(FLOW_TOOLS_LISTED):
                flow = flows.get(name)
                if flow is None:  # another org's flow (a grant of gateway__* or *)
                    continue
                tools.append(flow_listing(flow))
            else:
                tools.append(entry.listed)
            upstreams.add(entry.upstream)
    resources = [_CONTEXT_RESOURCE]
    # The gateway's own context prompt and resource win over an upstream's of the same name.
    resources += [
        r.resource
        for uri, r in catalog.resources.items()
        if (r.upstream in upstreams or context.grants_resource(uri)) and uri != CONTEXT_URI
    ]
    templates = [
        t.template
        for t in catalog.templates
        if t.upstream in upstreams or context.grants_resource(t.template.uri_template)
    ]
    prompts = [_CONTEXT_PROMPT]
    prompts += [
        p.listed
        for name, p in catalog.prompts.items()
        if (p.upstream in upstreams or context.grants_prompt(name)) and name != CONTEXT_PROMPT
    ]
    return View(
        context,
        catalog,
        tuple(tools),
        tuple(resources),
        tuple(templates),
        tuple(prompts),
        frozenset(upstreams),
        {tool.name: tool for tool in tools},
    )


def context_text(context: ResolvedContext) -> str:
    """The caller's assembled instructions, or why there are none."""
    if context.prompt:
        return context.prompt
    return context.note or "No instructions apply to you."
