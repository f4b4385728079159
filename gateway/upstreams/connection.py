"""One upstream MCP server: a long-lived SDK `Client` kept alive by a supervisor task.

The supervisor owns the `Client` in its own task (an upstream that dies takes down the
task holding its `Client`, never the gateway), connects with a bound on `initialize`,
lists what the upstream offers, and reconnects with backoff and jitter after a crash or a
disconnect. Its status (connecting, ready, degraded, down, disabled) says what it is
doing, the last error, and since when. Requests share the one session (the SDK multiplexes
them); their path is requests.py's, which reads the state kept here.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import mcp_types as types
from anyio.abc import TaskStatus
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from ..breaker import Breaker
from .config import MissingVariable, UpstreamConfig
from .guard import Listing
from .listing import Offer, list_offer
from .relay import CallerLink, client_callbacks
from .requests import UpstreamRequests
from .sessions import CallerSessions
from .status import State, Status, backoff, describe
from .subscriptions import LISTEN_ACK_TIMEOUT, UpstreamSubscriptions
from .transports import transport_for

logger = logging.getLogger("gateway.upstreams")

HANDSHAKE_VERSIONS = frozenset(HANDSHAKE_PROTOCOL_VERSIONS)
HEALTH_INTERVAL = 15.0
"""Seconds between checks of an idle connection (a listing, which also refreshes)."""
POLL_INTERVAL = 15.0
"""Seconds between listings of an upstream that announces no changes though it says it
would (a 2026-era listen stream that did not start or ended), busy or not."""
LIST_CHANGED = (
    types.ToolListChangedNotification,
    types.ResourceListChangedNotification,
    types.PromptListChangedNotification,
)


class UpstreamConnection(UpstreamRequests):
    def __init__(
        self,
        name: str,
        config: UpstreamConfig,
        on_change: Callable[[], None] | None = None,
        breaker: Breaker | None = None,
        start_gate: anyio.Semaphore | None = None,
        on_resource_updated: Callable[[str], None] | None = None,
        direct_calls: bool = True,
    ) -> None:
        """`direct_calls`: send tool calls to a 2026-era streamable-HTTP upstream as
        hand-built exchanges (exchange.py) rather than through the SDK client."""
        self.name = name
        self._direct_calls = direct_calls
        self.subscriptions = UpstreamSubscriptions(name)
        """Resources callers subscribed to here; renewed with every new session."""
        self._on_resource_updated = on_resource_updated
        self._start_gate = start_gate
        """Shared by a pool's stdio upstreams: how many children may be starting at once."""
        self._holding_gate = False
        self.config = config
        self.transport = transport_for(name, config)
        """How the upstream is reached, chosen once by its config."""
        self.breaker = breaker or Breaker(threshold=5, cooldown=1.0, max_cooldown=30.0)
        self.offer = Offer()
        """The last listing; kept while reconnecting, so tools do not flicker away."""
        self._listing = Listing()
        """What the guard keeps for this upstream, over all its sessions (guard.py)."""
        self._on_change = on_change
        self._settled = anyio.Event()
        self._client = None
        self._exchange = None
        self._sessions = None
        self._status = Status(
            State.DISABLED if not config.enabled else State.CONNECTING, time.time()
        )
        self._ready = anyio.Event()
        self._new_session = anyio.Event()
        self._reached_ready = False
        self._dead = anyio.Event()
        self._wake = anyio.Event()
        self._stale = False
        self._in_flight = 0
        self._links = []
        self._unannounced: str | None = None
        """Why an upstream that declares change announcements sends none (polled instead)."""
        self._logged_error: str | None = None
        self._call_error = Status(State.DEGRADED, 0.0)

    @property
    def tools(self) -> tuple[types.Tool, ...]:
        return self.offer.tools

    @property
    def calls_direct(self) -> bool:
        """Whether tool calls now go as hand-built exchanges (see exchange.py)."""
        return self._exchange is not None

    @property
    def notes(self) -> tuple[str, ...]:
        """What works other than it should, for `upstreams status`: the upstream is used
        all the same."""
        notes: list[str] = []
        if self._unannounced is not None:
            notes.append(f"no change announcements ({self._unannounced}); its listings are polled")
        return (*notes, *self.subscriptions.notes)

    @property
    def status(self) -> Status:
        if self._status.state is State.READY and self.breaker.failures:
            return self._call_error
        return self._status

    def _set(self, state: State, error: str | None = None, failures: int = 0) -> None:
        previous = self._status
        if state is not previous.state or error != previous.error:
            self._status = Status(state, time.time(), error, failures)
        # A crash loop logs its first failure, a new reason, and then ever more rarely.
        repeated = state is State.DOWN and error == self._logged_error
        if state is State.DOWN and (not repeated or failures & (failures - 1) == 0):
            logger.warning("upstream %s down (%d in a row): %s", self.name, failures, error)
            self._logged_error = error
        elif state is State.READY and previous.state is not State.READY:
            logger.info("upstream %s ready (%d tools)", self.name, len(self.tools))
            self._logged_error = None
        if state is not State.CONNECTING:
            self._settled.set()
        if state is State.READY:
            self._ready.set()
        elif self._ready.is_set():
            self._ready = anyio.Event()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def wait_settled(self) -> None:
        """Until the first attempt to connect ended, either way (or it is disabled)."""
        await self._settled.wait()

    async def run(self) -> None:
        """Connect and stay connected until cancelled; never raises for the upstream's
        faults."""
        if not self.config.enabled:
            self._set(State.DISABLED)
            return
        failures = 0
        while True:
            self._set(State.CONNECTING, self._status.error, failures)
            self._reached_ready = False
            try:
                await self._serve_one_connection()
                error = "the upstream closed the connection"
            except MissingVariable as exc:
                error = str(exc)
            except Exception as exc:  # a third party's faults come in every shape
                error = describe(exc)
            finally:
                self._client = None
            # Failures count in a row: a connection that got ready starts the count again.
            failures = 1 if self._reached_ready else failures + 1
            self._set(State.DOWN, error, failures)
            # A crash-looping stdio child waits here, burning nothing.
            await anyio.sleep(backoff(failures))

    async def _serve_one_connection(self) -> None:
        # A child process starting up is CPU-bound (an interpreter importing its SDK): many
        # at once on a small machine all miss their init_timeout and start over together.
        # So stdio children start a few at a time, each timed from when its turn comes.
        gate = self._start_gate if self.transport.starts_process else None
        if gate is not None:
            await gate.acquire()
        try:
            await self._connect_and_serve(gate)
        finally:
            if gate is not None and self._holding_gate:
                gate.release()
            self._holding_gate = False

    async def _connect_and_serve(self, gate: anyio.Semaphore | None) -> None:
        self._holding_gate = gate is not None
        # The bound covers connecting and `initialize`; once ready it is lifted. (A scope
        # around the `async with` entry alone would close before the Client's own task
        # group, which anyio forbids.)
        with anyio.CancelScope(deadline=anyio.current_time() + self.config.init_timeout) as scope:
            async with self._connect() as client, anyio.create_task_group() as tasks:
                self._dead = anyio.Event()
                self._wake = anyio.Event()
                self._stale = False
                # Listening first, then listing: a change announced in between is not lost.
                await tasks.start(self._follow_changes, client)
                await self._list(client)
                scope.deadline = math.inf
                if gate is not None:
                    gate.release()
                    self._holding_gate = False
                self._client = client
                if self._direct_calls:
                    self._exchange = self.transport.exchange(client.protocol_version)
                if not self._tells_calls_apart(client) and self.config.caller_sessions:
                    self._sessions = CallerSessions(
                        self.name,
                        client,
                        self._links,
                        lambda links: self.transport.open(self._callbacks(links), self._listing),
                        tasks,
                        self.config.caller_sessions,
                        self.config.caller_sessions_per_user,
                    )
                self._new_session.set()
                self._new_session = anyio.Event()
                self._reached_ready = True
                self.breaker.success()  # a new session starts with a clean slate
                self._set(State.READY)
                try:
                    await self.subscriptions.attach(client, tasks)
                    await self._watch(client)
                finally:
                    self.subscriptions.detach()
                    self._sessions = None  # their tasks end with this connection's
                    if self._exchange is not None:
                        exchange, self._exchange = self._exchange, None
                        with anyio.CancelScope(shield=True):
                            await exchange.aclose()
                tasks.cancel_scope.cancel()
        if scope.cancelled_caught:
            raise TimeoutError(f"not ready within {self.config.init_timeout:g} s")

    async def _watch(self, client: Client) -> None:
        """Return when the connection is dead. A dead SDK Client does not unwind by itself
        (a stdio child's exit leaves it open), so a call that saw the connection close
        says so, and an idle connection is checked now and then; a busy one never is, so
        a long call is never taken for a hang. Meanwhile the upstream's announcements of
        changed tools are followed by a new listing."""
        while True:
            polled = self._unannounced is not None
            with anyio.move_on_after(POLL_INTERVAL if polled else HEALTH_INTERVAL) as idle:
                await self._wake.wait()
            self._wake = anyio.Event()
            if self._dead.is_set():
                return
            if self._stale or (idle.cancelled_caught and polled and self._in_flight):
                self._stale = False
                await self._refresh(client)
            elif idle.cancelled_caught and not self._in_flight:
                try:
                    with anyio.fail_after(self.config.init_timeout):
                        await self._list(client)
                except TimeoutError:
                    raise TimeoutError(
                        f"no answer to a health check within {self.config.init_timeout:g} s"
                    ) from None

    async def _refresh(self, client: Client) -> None:
        try:
            with anyio.fail_after(self.config.init_timeout):
                await self._list(client)
        except (TimeoutError, MCPError) as exc:
            # The old listing stays; the next announcement or health check tries again.
            logger.warning("upstream %s: listing not refreshed: %s", self.name, describe(exc))

    async def _follow_changes(
        self, client: Client, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """2026-era upstreams announce changed listings on a listen stream (handshake-era
        ones send notifications, which `_on_message` takes). Started once listening, or
        once it is clear that no stream will come: a stream not acknowledged in time
        (one not framed as SSE never is), refused, or ended leaves the upstream polled."""
        self._unannounced = None
        caps = client.server_capabilities
        tools = bool(caps and caps.tools and caps.tools.list_changed)
        resources = bool(caps and caps.resources and caps.resources.list_changed)
        prompts = bool(caps and caps.prompts and caps.prompts.list_changed)
        if client.protocol_version in HANDSHAKE_VERSIONS or not (tools or resources or prompts):
            task_status.started()
            return
        # Never the whole init_timeout: a listen stream must not keep the upstream down.
        wait = min(LISTEN_ACK_TIMEOUT, self.config.init_timeout / 3)
        listening = False
        try:
            # The bound covers the acknowledgement only; once listening it is lifted.
            with anyio.CancelScope(deadline=anyio.current_time() + wait) as ack:
                async with client.listen(
                    tools_list_changed=tools,
                    resources_list_changed=resources,
                    prompts_list_changed=prompts,
                ) as changes:
                    ack.deadline = math.inf
                    listening = True
                    task_status.started()
                    async for _ in changes:
                        self._tools_changed()
            why = (
                f"subscriptions/listen: not acknowledged within {wait:g} s"
                if ack.cancelled_caught
                else "subscriptions/listen: the upstream ended the stream"
            )
        except (MCPError, RuntimeError, TimeoutError) as exc:  # RuntimeError: SubscriptionLost
            why = f"subscriptions/listen: {describe(exc)}"
        logger.warning("upstream %s: no change announcements, polling: %s", self.name, why)
        self._unannounced = why
        if listening:
            self._tools_changed()  # whatever changed since the last announcement
        else:
            task_status.started()

    async def _on_message(self, message: object) -> None:
        if isinstance(message, LIST_CHANGED):
            self._tools_changed()
        elif (
            isinstance(message, types.ResourceUpdatedNotification)
            and self._on_resource_updated is not None
        ):
            self._on_resource_updated(str(message.params.uri))

    def _tools_changed(self) -> None:
        self._stale = True
        self._wake.set()

    def relist(self) -> None:
        """List the upstream's offer again soon, as when it announces a change (the
        gateway's own upstream, whose flow tools change with the tags)."""
        self._tools_changed()

    def _callbacks(self, links: list[CallerLink]) -> dict[str, Any]:
        """The SDK client's callbacks for a session whose calls in flight are `links`.
        Only the gateway's own session speaks for the upstream's offer and resources."""
        own = links is self._links
        return client_callbacks(self.name, links, self._on_message if own else None)

    def _connect(self) -> AbstractAsyncContextManager[Client]:
        return self.transport.open(self._callbacks(self._links), self._listing)

    def _tells_calls_apart(self, client: Client) -> bool:
        """Whether the SDK client can say which call an upstream message belongs to: it
        runs its callbacks in the calling request's context over streamable HTTP, and in
        the 2026-07-28 revision on any transport (relay.py)."""
        return self.transport.tells_calls_apart or client.protocol_version not in HANDSHAKE_VERSIONS

    @property
    def asks_during_calls(self) -> bool:
        """Whether the upstream may ask its client during a call (the handshake era), as
        far as known: a 2026-07-28 upstream asks with InputRequiredResult instead."""
        client = self._client
        return client is None or client.protocol_version in HANDSHAKE_VERSIONS

    @property
    def caller_sessions(self) -> int:
        """Sessions open for callers besides the gateway's own (see sessions.py)."""
        return self._sessions.opened if self._sessions is not None else 0

    async def _list(self, client: Client) -> None:
        offer = await list_offer(client, self._listing)
        if offer != self.offer:
            self.offer = offer
            if self._on_change is not None:
                self._on_change()

    def _lost(self, client: Client) -> None:
        if self._client is client:
            self._client = None  # callers fail fast until the supervisor reconnects
            if self._ready.is_set():
                self._ready = anyio.Event()
            self._dead.set()
            self._wake.set()
        elif self._sessions is not None:
            self._sessions.close(client)  # a caller's own session
