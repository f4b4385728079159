"""What one upstream offers: its tools, resources, resource templates and prompts, each
listed to the last page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import mcp_types as types
from mcp import Client

from .guard import Listing

MAX_PAGES = 1000
"""An upstream that never stops paging is cut off here."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Offer:
    tools: tuple[types.Tool, ...] = ()
    resources: tuple[types.Resource, ...] = ()
    templates: tuple[types.ResourceTemplate, ...] = ()
    prompts: tuple[types.Prompt, ...] = ()
    listed: bool = False
    """Whether this is a listing at all (an upstream not yet listed offers nothing, which
    says nothing about what it will offer)."""
    problems: tuple[str, ...] = ()
    """What was left out of the listing, and why (a tool that cannot be used safely, a
    second tool of the same name)."""
    _tools_by_name: dict[str, types.Tool] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        self._tools_by_name.update((tool.name, tool) for tool in self.tools)

    def tool(self, name: str) -> types.Tool | None:
        """The tool named `name` (the upstream's own name), if offered."""
        return self._tools_by_name.get(name)


async def list_offer(client: Client, listing: Listing | None = None) -> Offer:
    """Everything `client`'s server declares it offers. A kind the server has no capability
    for is not asked about (an upstream without prompts would answer with an error).
    `listing`: where the client's guard reports the tools it left out."""
    if listing is not None:
        listing.clear()
    capabilities = client.server_capabilities
    tools: tuple[types.Tool, ...] = ()
    resources: tuple[types.Resource, ...] = ()
    templates: tuple[types.ResourceTemplate, ...] = ()
    prompts: tuple[types.Prompt, ...] = ()
    if capabilities is None or capabilities.tools is not None:
        tools = await _pages(
            lambda cursor: client.list_tools(cursor=cursor), lambda page: page.tools
        )
    if capabilities is not None and capabilities.resources is not None:
        resources = await _pages(
            lambda cursor: client.list_resources(cursor=cursor), lambda page: page.resources
        )
        templates = await _pages(
            lambda cursor: client.list_resource_templates(cursor=cursor),
            lambda page: page.resource_templates,
        )
    if capabilities is not None and capabilities.prompts is not None:
        prompts = await _pages(
            lambda cursor: client.list_prompts(cursor=cursor), lambda page: page.prompts
        )
    tools, twins = _first_of_each_name(tools)
    dropped = tuple(listing.dropped) if listing is not None else ()
    return Offer(tools, resources, templates, prompts, True, dropped + twins)


def _first_of_each_name(
    tools: tuple[types.Tool, ...],
) -> tuple[tuple[types.Tool, ...], tuple[str, ...]]:
    """One tool per name: the first listed. A second of the same name is no clash between
    upstreams (which stops the gateway) but one upstream's own mistake, so it costs only
    that tool."""
    kept: dict[str, types.Tool] = {}
    problems: list[str] = []
    for tool in tools:
        if tool.name in kept:
            problems.append(
                f"tool {tool.name!r} left out once: the upstream lists two tools of that name; "
                "the first is kept"
            )
        else:
            kept[tool.name] = tool
    return tuple(kept.values()), tuple(dict.fromkeys(problems))


class _Page(Protocol):
    @property
    def next_cursor(self) -> str | None: ...


P = TypeVar("P", bound=_Page)


async def _pages(
    fetch: Callable[[str | None], Awaitable[P]], items: Callable[[P], Sequence[T]]
) -> tuple[T, ...]:
    found: list[T] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = await fetch(cursor)
        found.extend(items(page))
        cursor = page.next_cursor
        if not cursor:
            break
    return tuple(found)
