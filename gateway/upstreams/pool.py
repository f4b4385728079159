"""The pool: every configured upstream, connected in parallel, and the catalog over them.

An upstream that fails never blocks or crashes the others: each runs in its own
supervisor task (`UpstreamConnection`). The catalog is rebuilt whenever an upstream's
offer changes (connected, reconnected, announced a change), each time with a new version
number, and listeners (the MCP front) are told. Tool definitions pass the ledger first
(see definitions.py): a quarantined tool is not in the catalog.

The gateway's own tools (own_tools.py) are one more upstream here, named `gateway`, served
in process: listed, judged, checked and called like any other, under the reserved prefix
`gateway__` that no other upstream's tool is listed under (catalog.py).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping

import anyio
import mcp_types as types

from ..errors import UpstreamError
from ..watching import file_changes
from .catalog import AmbiguousResource, Catalog, build
from .config import OWN_UPSTREAM, InProcessUpstream, UpstreamConfig, public_prefix, reserved_claim
from .connection import UpstreamConnection
from .definitions import DefinitionLedger
from .status import Status

logger = logging.getLogger("gateway.upstreams")

CatalogListener = Callable[[Catalog], None]


class Pool:
    def __init__(
        self,
        upstreams: Mapping[str, UpstreamConfig],
        ledger: DefinitionLedger | None = None,
        start_concurrency: int | None = None,
        direct_calls: bool = True,
        own: InProcessUpstream | None = None,
    ) -> None:
        """`start_concurrency`: stdio children starting at once (default twice the CPUs,
        at least 4); the rest wait their turn before their init_timeout starts.
        `direct_calls`: see UpstreamConnection. `own`: the gateway's own tools, held as
        upstream `gateway` (own_tools.py); none: the pool serves only `upstreams`.
        Raises ValueError for an upstream of `upstreams` that claims the own tools' name
        or prefix (gateway.yaml is refused for it before: settings.py)."""
        for name, config in upstreams.items():
            claim = reserved_claim(name, config)
            if claim is not None:
                raise ValueError(f"{claim[0]}: {claim[1]}")
        self.ledger = ledger or DefinitionLedger()
        self._configs: dict[str, UpstreamConfig] = dict(upstreams)
        if own is not None:
            self._configs[OWN_UPSTREAM] = own
        upstreams = self._configs
        starting = anyio.Semaphore(start_concurrency or max(4, 2 * (os.cpu_count() or 1)))
        self.connections = {
            name: UpstreamConnection(
                name,
                config,
                on_change=self._offer_changed,
                start_gate=starting,
                on_resource_updated=self._resource_updated,
                direct_calls=direct_calls,
            )
            for name, config in upstreams.items()
        }
        self._prefixes = {name: public_prefix(name, c) for name, c in upstreams.items()}
        self._catalog = build(0, {})
        self._listeners: list[CatalogListener] = []
        self._update_listeners: list[Callable[[str], None]] = []
        self._judged: dict[
            str, tuple[tuple[types.Tool, ...], tuple[types.Tool, ...], dict[str, str]]
        ] = {}
        """Per upstream: the listing last judged, the tools kept, the hidden ones and why."""

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    def statuses(self) -> dict[str, Status]:
        return {name: c.status for name, c in self.connections.items()}

    def subscribe(self, listener: CatalogListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def on_resource_updated(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call `listener(uri)` whenever an upstream says a subscribed resource changed."""
        self._update_listeners.append(listener)
        return lambda: self._update_listeners.remove(listener)

    def _resource_updated(self, uri: str) -> None:
        for listener in list(self._update_listeners):
            try:
                listener(uri)
            except Exception:
                logger.exception("resource update listener %r failed", listener)

    async def subscribe_resource(self, uri: str) -> None:
        """Follow `uri` at the upstream that offers it (from now on, across reconnects).
        Raises UpstreamError when no upstream offers it."""
        await self.connections[self._resource_upstream(uri)].subscriptions.add(uri)

    async def unsubscribe_resource(self, uri: str) -> None:
        for connection in self.connections.values():
            await connection.subscriptions.remove(uri)

    def _resource_upstream(self, uri: str) -> str:
        try:
            upstream = self._catalog.resource_upstream(uri)
        except AmbiguousResource as exc:
            raise UpstreamError(str(exc)) from None
        if upstream is None:
            raise UpstreamError(f"no upstream offers a resource {uri!r}")
        return upstream

    async def run(self) -> None:
        """Run every upstream until cancelled."""
        async with anyio.create_task_group() as tasks:
            for connection in self.connections.values():
                tasks.start_soon(connection.run)
            if self.ledger.path is not None:
                tasks.start_soon(self._follow_approvals)

    async def _follow_approvals(self) -> None:
        """An admin approving a definition (`gateway tools approve`) writes the ledger;
        the catalog is rebuilt with the tool back in it."""
        path = self.ledger.path
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        async for _ in file_changes(path, 50):
            if self.ledger.changed_on_disk():
                self._offer_changed(rejudge=True)

    async def settled(self) -> None:
        """Return once every upstream has made its first attempt (ready, down or disabled):
        what start-up waits for, each upstream bounded by its own init_timeout."""
        for connection in self.connections.values():
            await connection.wait_settled()

    def _offer_changed(self, rejudge: bool = False) -> None:
        # An upstream's last listing stays while it reconnects (see UpstreamConnection.offer).
        offered = {}
        quarantined: dict[str, str] = {}
        for name, connection in self.connections.items():
            prefix, offer = self._prefixes[name], connection.offer
            if not offer.listed:
                # Not listed yet: judging its empty offer would make the upstream "seen",
                # and its whole first listing new tools (definitions.py).
                offered[name] = (prefix, offer)
                continue
            judged = self._judged.get(name)
            # Only a new listing (or a ledger changed by an approval) is judged again.
            if rejudge or judged is None or judged[0] is not offer.tools:
                mode = self._configs[name].on_definition_change
                kept, hidden = self.ledger.judge(name, offer.tools, mode)
                judged = (offer.tools, tuple(kept), hidden)
                self._judged[name] = judged
            _, kept_tools, hidden = judged
            offered[name] = (prefix, dataclasses.replace(offer, tools=kept_tools))
            for tool, reason in hidden.items():
                quarantined[prefix + tool] = f"upstream {name!r}: tool {tool!r} is hidden: {reason}"
        catalog = build(self._catalog.version + 1, offered, quarantined)
        for problem in catalog.problems:
            if problem not in self._catalog.problems:
                logger.error("catalog: %s", problem)
        for public, reason in catalog.quarantined.items():
            if public not in self._catalog.quarantined:
                logger.warning("catalog: %s (approve: gateway tools approve %s)", reason, public)
        self._catalog = catalog
        for listener in list(self._listeners):
            try:
                listener(catalog)
            except Exception:
                logger.exception("catalog listener %r failed", listener)

    async def read_resource(self, uri: str) -> types.ReadResourceResult:
        """Read `uri` from the upstream that offers it. Raises UpstreamError when none (or
        more than one) does."""
        return await self.connections[self._resource_upstream(uri)].read_resource(uri)

    async def complete(
        self,
        upstream: str,
        ref: types.PromptReference | types.ResourceTemplateReference,
        argument: dict[str, str],
        context: dict[str, str] | None = None,
    ) -> types.CompleteResult:
        """Completion from `upstream`, for a reference in its own names."""
        return await self.connections[upstream].complete(ref, argument, context)

    async def get_prompt(
        self, public_name: str, arguments: Mapping[str, str]
    ) -> types.GetPromptResult:
        entry = self._catalog.prompts.get(public_name)
        if entry is None:
            raise UpstreamError(f"no upstream offers a prompt named {public_name!r}")
        return await self.connections[entry.upstream].get_prompt(entry.prompt.name, dict(arguments))
