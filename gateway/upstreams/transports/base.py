"""What every upstream transport does the same way: an SDK `Client` over the transport's
streams, the guard between them (guard.py), the roots callback where roots are
configured (roots.py), and no response cache (list_changed says when a listing is stale).
A transport says only how its streams are opened, and what its connection can do."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import mcp_types as types
from mcp import Client
from mcp.client import Transport

from ... import __version__
from ..config import UpstreamConfig
from ..guard import Listing, guarded
from ..roots import roots_callback

if TYPE_CHECKING:
    from ..exchange import Exchange

CLIENT_INFO = types.Implementation(name="mcp-tag-gateway", version=__version__)
"""How the gateway introduces itself to upstreams."""


class UpstreamTransport(ABC):
    """How the gateway reaches one upstream, chosen once from its config (transport_for)."""

    starts_process: ClassVar[bool] = False
    """Whether connecting starts a child process: CPU-bound, so a pool starts a few at a
    time (see UpstreamConnection)."""
    tells_calls_apart: ClassVar[bool] = False
    """Whether the SDK client runs an upstream's messages during a call in that call's
    context in every protocol era (so they reach the right caller, relay.py); on any
    transport it does in the 2026-07-28 revision."""

    def __init__(self, name: str, config: UpstreamConfig) -> None:
        self.name = name
        self.config = config

    @abstractmethod
    def streams(self) -> AbstractAsyncContextManager[Transport]:
        """The SDK transport to the upstream, with whatever it needs while open (an HTTP
        client); `${VAR}` references are expanded on entering, so MissingVariable comes
        from here."""

    @asynccontextmanager
    async def open(
        self, callbacks: dict[str, Any], listing: Listing | None = None
    ) -> AsyncIterator[Client]:
        """A connected client; `callbacks` are the Client's handler arguments. The guard
        tells `listing` what it left out of tool listings."""
        listing = listing if listing is not None else Listing()
        callbacks = {**callbacks, **roots_callback(self.config)}
        async with (
            self.streams() as transport,
            Client(
                guarded(transport, self.name, listing),
                cache=None,
                client_info=CLIENT_INFO,
                **callbacks,
            ) as client,
        ):
            yield client

    def exchange(self, protocol_version: str | None) -> Exchange | None:
        """Where tool calls may go direct, as hand-built exchanges (exchange.py), once the
        client is connected with `protocol_version`; None: through the SDK client."""
        return None
