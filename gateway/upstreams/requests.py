"""Requests to one upstream over the session its supervisor keeps (connection.py).

Tool calls (as hand-built exchanges where the upstream allows, exchange.py), resource
reads, prompts and completions: each capped by the upstream's `call_timeout`, failing fast
while the upstream is down or its breaker is open, and sent on a caller's own session
where the upstream cannot tell callers apart (sessions.py). Lost connections and timeouts
count against the breaker; an upstream's own error answer does not, and neither does any
request content: what JSON cannot carry is refused before it is sent (sendable.py).

A tool call is retried (once, after the reconnect) only when the connection was lost before
an answer and the caller says the tool is safe to repeat: a payment is attempted once.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar, cast, overload

import anyio
import mcp_types as types
from mcp import Client
from mcp.shared.exceptions import MCPError
from pydantic import TypeAdapter

from ..breaker import Breaker
from ..errors import CallTimeout, ConnectionLost, UpstreamUnavailable
from ..principal import Principal
from .config import CALLER_META, IDEMPOTENCY_META, LINK_META, UpstreamConfig
from .exchange import Exchange, ExchangeLost, ExchangeUnsent, NeedsClient
from .listing import Offer
from .relay import Asker, CallerLink, LogCallback, ProgressCallback, current_link, own_links
from .roots import answer_roots, callers_responses, without_roots
from .sendable import sendable
from .sessions import CallerSessions, SessionFailed
from .status import State, Status

logger = logging.getLogger("gateway.upstreams")

R = TypeVar("R")
_RESPONSES: TypeAdapter[types.InputResponses] = TypeAdapter(types.InputResponses)
ROOTS_ROUNDS = 4
"""Rounds of an upstream's roots questions the gateway answers within one call."""


@dataclass(frozen=True, slots=True)
class InputRound:
    """A 2026-07-28 caller's answers to an InputRequiredResult, sent with its retry."""

    responses: types.InputResponses | None = None
    request_state: str | None = None
    capabilities: types.ClientCapabilities | None = None
    """What the caller declared it can be asked (None: neither sampling nor elicitation):
    an upstream is told only of these, so it never asks what the caller cannot answer."""


class UpstreamRequests:
    """The request path of an UpstreamConnection, which keeps the session: the state read
    here is what the supervisor publishes, and a connection found closed is reported
    back through `_lost`."""

    name: str
    config: UpstreamConfig
    breaker: Breaker
    """Opened by calls that time out or lose the connection, not by tools' own errors."""
    offer: Offer
    _client: Client | None
    """The live session's client; None while connecting or down."""
    _exchange: Exchange | None
    """Tool calls on a 2026-era streamable-HTTP upstream, while its session lasts."""
    _sessions: CallerSessions | None
    """A session per caller, where the upstream cannot tell calls apart (sessions.py)."""
    _status: Status
    _new_session: anyio.Event
    """Set when the next session is ready (then replaced)."""
    _links: list[CallerLink]
    """The caller link of each call in flight on the gateway's own session (relay.py)."""
    _in_flight: int
    _call_error: Status

    def _lost(self, client: Client) -> None:
        """`client`'s connection closed under a request."""
        raise NotImplementedError

    @overload
    async def call_tool(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        retry: bool = ...,
        on_progress: ProgressCallback | None = ...,
        on_log: LogCallback | None = ...,
        log_level: types.LoggingLevel = ...,
        asker: Asker | None = ...,
        input_round: None = ...,
        owner: Hashable | None = ...,
        user: Hashable | None = ...,
        caller: Principal | None = ...,
        idempotency_key: str | None = ...,
    ) -> types.CallToolResult: ...

    @overload
    async def call_tool(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        retry: bool = ...,
        on_progress: ProgressCallback | None = ...,
        on_log: LogCallback | None = ...,
        log_level: types.LoggingLevel = ...,
        asker: Asker | None = ...,
        input_round: InputRound | None,
        owner: Hashable | None = ...,
        user: Hashable | None = ...,
        caller: Principal | None = ...,
        idempotency_key: str | None = ...,
    ) -> types.CallToolResult | types.InputRequiredResult: ...

    async def call_tool(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        retry: bool = False,
        on_progress: ProgressCallback | None = None,
        on_log: LogCallback | None = None,
        log_level: types.LoggingLevel = "info",
        asker: Asker | None = None,
        input_round: InputRound | None = None,
        owner: Hashable | None = None,
        user: Hashable | None = None,
        caller: Principal | None = None,
        idempotency_key: str | None = None,
    ) -> types.CallToolResult | types.InputRequiredResult:
        """Call `tool`, capped by call_timeout (one cap over every attempt). `retry`: the
        caller knows the tool is safe to repeat (read-only or idempotent), so a call whose
        connection was lost is made once more after the reconnect. Raises UpstreamError.

        `asker` answers the upstream's sampling and elicitation requests during the call.
        With `input_round` (a 2026-07-28 caller), an upstream's InputRequiredResult is
        returned as it is, for the caller to answer and call again with the round's
        responses; otherwise the SDK client answers it through `asker` and retries.
        `owner`: the caller, whose calls never share a session with another caller's where
        the upstream cannot tell them apart (sessions.py); `user`: whose calls `owner`
        makes, which hold at most the upstream's `caller_sessions_per_user` sessions;
        `caller`: who calls, told to the gateway's own (in-process) tools alone;
        `idempotency_key`: sent in the request's `_meta` (IDEMPOTENCY_META)."""
        what = f"{tool} on upstream {self.name}"
        sendable(what, arguments=arguments)
        if input_round is not None:
            responses = input_round.responses
            sendable(
                what,
                inputResponses=_RESPONSES.dump_python(responses, by_alias=True, mode="json")
                if responses is not None
                else None,
                requestState=input_round.request_state,
            )
        # 2026-era upstreams send log messages only to requests that ask for them.
        meta = (
            cast(types.RequestParamsMeta, {types.LOG_LEVEL_META_KEY: log_level}) if on_log else None
        )
        if idempotency_key is not None:
            meta = cast(
                types.RequestParamsMeta, {**(meta or {}), IDEMPOTENCY_META: idempotency_key}
            )
        if caller is not None and self.config.transport == "inprocess":
            # The gateway's own tools act as the caller (run_session): who it is travels
            # with the request, to this upstream only, and only as the gateway sets it
            # (no door passes a caller's `_meta` on).
            vouched = {"user": caller.user_id, "org": caller.org_id, "roles": list(caller.roles)}
            meta = cast(types.RequestParamsMeta, {**(meta or {}), CALLER_META: vouched})

        async def send_once(
            client: Client, responses: types.InputResponses | None, state: str | None
        ) -> types.CallToolResult | types.InputRequiredResult:
            exchange = self._exchange
            if exchange is not None and (entry := self.offer.tool(tool)) is not None:
                try:
                    return await exchange.call_tool(
                        entry,
                        arguments,
                        on_progress=on_progress,
                        on_log=on_log,
                        log_level=log_level,
                        input_round=(responses, state) if input_round is not None else None,
                        asks=input_round.capabilities if input_round is not None else None,
                        idempotency_key=idempotency_key,
                    )
                except NeedsClient:
                    pass  # the SDK client asks the caller through `asker`, and calls again
            # No SDK read timeout: _request's cap covers it (and, unlike the SDK's clock,
            # never pauses), and one timer per call is cheaper than two.
            if input_round is not None:
                return await client.session.call_tool(
                    tool,
                    arguments,
                    progress_callback=on_progress,
                    input_responses=responses,
                    request_state=state,
                    meta=meta,
                    allow_input_required=True,
                )
            return await client.call_tool(tool, arguments, progress_callback=on_progress, meta=meta)

        async def send(
            client: Client, _timeout: float
        ) -> types.CallToolResult | types.InputRequiredResult:
            if input_round is None:
                return await send_once(client, None, None)
            # Roots are the gateway's to answer (roots.py): the caller's answers go on
            # without any roots answer, and the upstream's roots questions are answered
            # here, with the caller's answers again, never put to the caller.
            theirs = callers_responses(input_round.responses)
            result = await send_once(client, theirs, input_round.request_state)
            for _ in range(ROOTS_ROUNDS):
                if not isinstance(result, types.InputRequiredResult):
                    return result
                ours = answer_roots(self.config, result)
                if ours is None:
                    return result
                result = await send_once(client, {**(theirs or {}), **ours}, result.request_state)
            if isinstance(result, types.InputRequiredResult):
                return without_roots(result)
            return result

        link = CallerLink(on_log, asker, owner)
        link_id: str | None = None
        if caller is not None and self.config.transport == "inprocess":
            # And the way to reach the caller during the call (its asker), by an id.
            link_id = secrets.token_urlsafe(12)
            own_links[link_id] = link
            meta = cast(types.RequestParamsMeta, {**(meta or {}), LINK_META: link_id})
        try:
            deadline = anyio.current_time() + self.config.call_timeout
            next_session = self._new_session
            session = self._client
            try:
                return await self._request(what, send, deadline, link, owner, user)
            except ConnectionLost:
                if not retry:
                    raise
            if session is not None and self._client is session:
                # Only the call's own exchange broke off (a connection reset, a stale
                # keep-alive): the session goes on, so no next one will come to wait for.
                logger.info(
                    "upstream %s: retrying %s at once, which is safe to repeat", self.name, tool
                )
                try:
                    return await self._request(what, send, deadline, link, owner, user)
                except UpstreamUnavailable:
                    if self._client is session:
                        raise  # not sent, and the session is still up: nothing to wait for
            with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
                await next_session.wait()
            logger.info("upstream %s: retrying %s, which is safe to repeat", self.name, tool)
            return await self._request(what, send, deadline, link, owner, user)
        finally:
            if link_id is not None:
                del own_links[link_id]

    async def read_resource(self, uri: str) -> types.ReadResourceResult:
        sendable(f"resource on upstream {self.name}", uri=uri)
        deadline = anyio.current_time() + self.config.call_timeout
        return await self._request(
            f"resource {uri} on upstream {self.name}",
            lambda client, _timeout: client.read_resource(uri, cache_mode="bypass"),
            deadline,
        )

    async def get_prompt(self, prompt: str, arguments: dict[str, str]) -> types.GetPromptResult:
        sendable(f"prompt {prompt} on upstream {self.name}", arguments=arguments)
        deadline = anyio.current_time() + self.config.call_timeout
        return await self._request(
            f"prompt {prompt} on upstream {self.name}",
            lambda client, _timeout: client.get_prompt(prompt, arguments),
            deadline,
        )

    async def complete(
        self,
        ref: types.PromptReference | types.ResourceTemplateReference,
        argument: dict[str, str],
        context: dict[str, str] | None,
    ) -> types.CompleteResult:
        sendable(f"completion on upstream {self.name}", argument=argument, context=context)
        deadline = anyio.current_time() + self.config.call_timeout
        return await self._request(
            f"completion on upstream {self.name}",
            lambda client, _timeout: client.complete(ref, argument, context),
            deadline,
        )

    async def _request(
        self,
        what: str,
        send: Callable[[Client, float], Awaitable[R]],
        deadline: float,
        link: CallerLink | None = None,
        owner: Hashable | None = None,
        user: Hashable | None = None,
    ) -> R:
        """One request over the live session (or `owner`'s own, see sessions.py), failing
        fast while it is down or its breaker is open, and bounded by `deadline`. Lost
        connections and timeouts count against the breaker; an upstream's own error answer
        does not."""
        client = self._client
        if client is None:
            status = self._status
            reason = status.error or status.state.value
            if status.state is State.READY:
                reason = "its connection was just lost"
            raise UpstreamUnavailable(
                f"upstream {self.name} is not ready ({reason}); {what} not sent"
            )
        wait = self.breaker.retry_after()
        if wait > 0:
            raise UpstreamUnavailable(
                f"upstream {self.name} failed {self.breaker.failures} calls in a row; "
                f"{what} not sent, calls resume in {wait:.1f} s"
            )
        sessions = self._sessions
        if sessions is None or owner is None:
            return await self._send(what, send, deadline, link, client, self._links)
        try:
            async with sessions.lease(owner, deadline, user) as (leased, links):
                return await self._send(what, send, deadline, link, leased, links)
        except SessionFailed as exc:
            raise UpstreamUnavailable(
                f"upstream {self.name}: no session for this caller ({exc}); {what} not sent"
            ) from None

    async def _send(
        self,
        what: str,
        send: Callable[[Client, float], Awaitable[R]],
        deadline: float,
        link: CallerLink | None,
        client: Client,
        links: list[CallerLink],
    ) -> R:
        limit = self.config.call_timeout
        self._in_flight += 1
        link = link or CallerLink()
        links.append(link)
        # Seen by the SDK client's callbacks where they run in this task's context.
        reset = current_link.set(link)
        try:
            # A bare scope, not fail_after: this runs for every call, and fail_after's
            # generator costs twice the scope.
            with anyio.CancelScope(deadline=deadline):
                result = await send(client, deadline - anyio.current_time())
                self.breaker.success()
                return result
            raise TimeoutError  # reached only when the deadline ended the call
        except TimeoutError:
            self._failed(f"{what} did not answer within {limit:g} s")
            raise CallTimeout(f"{what} did not answer within {limit:g} s") from None
        except ExchangeUnsent as exc:
            self._failed(f"{what} could not be sent: {exc}")
            raise UpstreamUnavailable(
                f"upstream {self.name} cannot be reached; {what} not sent"
            ) from exc
        except ExchangeLost as exc:
            # One exchange broke off; the upstream's session and other calls go on. The
            # cause is for operators (upstreams status); the caller is told what the SDK
            # client's leg tells it, in the same words.
            self._failed(f"the connection was lost during {what}: {exc}")
            raise ConnectionLost(
                f"upstream {self.name}: the connection was lost during {what}"
            ) from exc
        except MCPError as exc:
            code = exc.error.code
            if code == types.CONNECTION_CLOSED and _ours(exc.error):
                self._failed(f"the connection closed during {what}")
                self._lost(client)
                raise ConnectionLost(
                    f"upstream {self.name}: the connection was lost during {what}"
                ) from exc
            self.breaker.success()  # the upstream answered, if with an error
            raise
        finally:
            self._in_flight -= 1
            links.remove(link)
            current_link.reset(reset)

    def _failed(self, error: str) -> None:
        since = self._call_error.since if self.breaker.failures else time.time()
        self.breaker.failure()
        self._call_error = Status(State.DEGRADED, since, error, self.breaker.failures)


_CLOSED = frozenset(
    {
        "Connection closed",  # the SDK's dispatcher and client session
        "SSE stream ended without a response",  # its streamable-HTTP transport
        "SSE stream ended and reconnection attempts were exhausted",
        "the upstream ended the stream before answering",  # exchange.py
    }
)
_CLOSED_PREFIX = "SSE stream failed: "  # the transport, with the stream's error after it


def _ours(error: types.ErrorData) -> bool:
    """Whether a CONNECTION_CLOSED error is the client side's own, in the exact words the
    pinned SDK and exchange.py make it up with, not an upstream's error answer with the
    same code: -32000 opens JSON-RPC's range of servers' own errors, and many servers
    answer with it ("Connection closed by peer" from a database's tool server). Taken for
    a lost connection, such an answer restarted the upstream for every caller and counted
    against its breaker. (-32001, the SDK's timeout, is never ours: the gateway gives the
    SDK no timeout, its own deadline raises TimeoutError.) An upstream that relays
    another's "Connection closed" word for word is still taken for a lost connection."""
    if error.data is not None:
        return False
    return error.message in _CLOSED or error.message.startswith(_CLOSED_PREFIX)
