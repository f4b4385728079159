"""One upstream MCP server: a long-lived SDK `Client` kept alive by a supervisor task.

The supervisor owns the `Client` in its own task (an upstream that dies takes down the
task holding its `Client`, never the gateway), connects with a bound on `initialize`,
lists what the upstream offers, and reconnects with backoff and jitter after a crash or a
disconnect. Its status (connecting, ready, down, disabled) says what it is doing, the last
error, and since when. Calls share the one session (the SDK multiplexes them) and are
capped by the upstream's `call_timeout`.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import anyio
import httpx2
import mcp_types as types
from anyio.abc import TaskStatus
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from ..breaker import Breaker
from ..errors import GatewayError
from .config import HttpUpstream, MissingVariable, StdioUpstream, expand

logger = logging.getLogger("gateway.upstreams")

UpstreamConfig = StdioUpstream | HttpUpstream
BACKOFF_BASE = 0.2
BACKOFF_CAP = 30.0
HANDSHAKE_VERSIONS = frozenset(HANDSHAKE_PROTOCOL_VERSIONS)
HEALTH_INTERVAL = 15.0
"""Seconds between checks of an idle connection (a tools/list, which also refreshes)."""


class State(StrEnum):
    CONNECTING = "connecting"
    READY = "ready"
    DOWN = "down"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class Status:
    state: State
    since: float
    """Wall-clock time of the last change."""
    error: str | None = None
    """Why it is down, or why it last went down."""
    failures: int = 0
    """Connection attempts that failed in a row."""


class UpstreamError(GatewayError):
    """A call could not be made or did not complete; the message names upstream and tool."""


def backoff(failures: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait after `failures` failures in a row: exponential, capped, with full
    jitter so that upstreams failing together do not retry together."""
    return random.uniform(0, min(cap, base * 2 ** min(failures, 30)))


class UpstreamConnection:
    def __init__(
        self,
        name: str,
        config: UpstreamConfig,
        on_tools: Callable[[], None] | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.breaker = breaker or Breaker(threshold=5, cooldown=1.0, max_cooldown=30.0)
        """Opened by calls that time out or lose the connection, not by tools' own errors."""
        self.tools: tuple[types.Tool, ...] = ()
        """The last listing; kept while reconnecting, so tools do not flicker away."""
        self._on_tools = on_tools
        self._settled = anyio.Event()
        self._client: Client | None = None
        self._status = Status(
            State.DISABLED if not config.enabled else State.CONNECTING, time.time()
        )
        self._ready = anyio.Event()
        self._reached_ready = False
        self._dead = anyio.Event()
        self._wake = anyio.Event()
        self._stale = False
        self._in_flight = 0
        self._logged_error: str | None = None

    @property
    def status(self) -> Status:
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
                error = _describe(exc)
            finally:
                self._client = None
            # Failures count in a row: a connection that got ready starts the count again.
            failures = 1 if self._reached_ready else failures + 1
            self._set(State.DOWN, error, failures)
            # A crash-looping stdio child waits here, burning nothing.
            await anyio.sleep(backoff(failures))

    async def _serve_one_connection(self) -> None:
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
                await self._list_tools(client)
                scope.deadline = math.inf
                self._client = client
                self._reached_ready = True
                self._set(State.READY)
                await self._watch(client)
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
            with anyio.move_on_after(HEALTH_INTERVAL) as idle:
                await self._wake.wait()
            self._wake = anyio.Event()
            if self._dead.is_set():
                return
            if self._stale:
                self._stale = False
                await self._refresh(client)
            elif idle.cancelled_caught and not self._in_flight:
                try:
                    with anyio.fail_after(self.config.init_timeout):
                        await self._list_tools(client)
                except TimeoutError:
                    raise TimeoutError(
                        f"no answer to a health check within {self.config.init_timeout:g} s"
                    ) from None

    async def _refresh(self, client: Client) -> None:
        try:
            with anyio.fail_after(self.config.init_timeout):
                await self._list_tools(client)
        except (TimeoutError, MCPError) as exc:
            # The old listing stays; the next announcement or health check tries again.
            logger.warning("upstream %s: tools not refreshed: %s", self.name, _describe(exc))

    async def _follow_changes(
        self, client: Client, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """2026-era upstreams announce changed tools on a listen stream (handshake-era ones
        send a notification, which `_on_message` takes). Started once listening."""
        capability = client.server_capabilities.tools if client.server_capabilities else None
        if client.protocol_version in HANDSHAKE_VERSIONS or not (
            capability and capability.list_changed
        ):
            task_status.started()
            return
        listening = False
        try:
            async with client.listen(tools_list_changed=True) as changes:
                listening = True
                task_status.started()
                async for _ in changes:
                    self._tools_changed()
        except MCPError as exc:
            logger.info("upstream %s: no change announcements: %s", self.name, _describe(exc))
            if not listening:
                task_status.started()

    async def _on_message(self, message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self._tools_changed()

    def _tools_changed(self) -> None:
        self._stale = True
        self._wake.set()

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[Client]:
        config = self.config
        if isinstance(config, StdioUpstream):
            env = {key: expand(value, self.name, f"env {key}") for key, value in config.env.items()}
            params = StdioServerParameters(
                command=config.command, args=list(config.args), env=env, cwd=config.cwd
            )
            async with Client(params, cache=None, message_handler=self._on_message) as client:
                yield client
            return
        headers = {
            key: expand(value, self.name, f"header {key}") for key, value in config.headers.items()
        }
        if config.transport == "sse":
            async with Client(
                sse_client(config.url, headers=headers),
                cache=None,
                message_handler=self._on_message,
            ) as client:
                yield client
            return
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=None)) as http,
            Client(
                streamable_http_client(config.url, http_client=http),
                cache=None,
                message_handler=self._on_message,
            ) as client,
        ):
            yield client

    async def _list_tools(self, client: Client) -> None:
        tools: list[types.Tool] = []
        cursor: str | None = None
        for _ in range(1000):  # pages; an upstream that never stops paging is cut off
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        if tuple(tools) != self.tools:
            self.tools = tuple(tools)
            if self._on_tools is not None:
                self._on_tools()

    async def call_tool(self, tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """Call `tool` on this upstream, capped by its call_timeout. Raises UpstreamError."""
        client = self._client
        if client is None:
            reason = self._status.error or self._status.state.value
            raise UpstreamError(f"upstream {self.name} is not ready ({reason}); {tool} not called")
        wait = self.breaker.retry_after()
        if wait > 0:
            raise UpstreamError(
                f"upstream {self.name} failed {self.breaker.failures} calls in a row; "
                f"{tool} not called, calls resume in {wait:.1f} s"
            )
        limit = self.config.call_timeout
        self._in_flight += 1
        try:
            with anyio.fail_after(limit):
                result = await client.call_tool(tool, arguments, read_timeout_seconds=limit)
            self.breaker.success()
            return result
        except TimeoutError:
            self.breaker.failure()
            raise UpstreamError(
                f"{tool} on upstream {self.name} did not answer within {limit:g} s"
            ) from None
        except MCPError as exc:
            if exc.error.code in (types.CONNECTION_CLOSED, types.REQUEST_TIMEOUT):
                self.breaker.failure()
            else:
                self.breaker.success()  # the upstream answered, if with an error
            if exc.error.code == types.CONNECTION_CLOSED:
                if self._client is client:
                    self._client = None  # callers fail fast until the supervisor reconnects
                    self._dead.set()
                    self._wake.set()
                raise UpstreamError(
                    f"upstream {self.name} closed the connection during {tool}"
                ) from exc
            if exc.error.code == types.REQUEST_TIMEOUT:
                raise UpstreamError(
                    f"{tool} on upstream {self.name} did not answer within {limit:g} s"
                ) from exc
            raise
        finally:
            self._in_flight -= 1


def _describe(exc: BaseException) -> str:
    """The innermost meaningful message of what may be nested exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
