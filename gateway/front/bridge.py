"""Bridging the eras' ways of asking: a 2026-07-28 caller asked by a handshake-era upstream.

A handshake-era upstream asks its client (sampling, elicitation) in the middle of a call
and waits for the answer; a 2026-07-28 caller is asked by an InputRequiredResult and
answers by calling again. So the call of a caller that declared sampling or elicitation
runs in a task of its own here: when the upstream asks, the caller's request is answered
with the question as an input request, whose `requestState` is a token the gateway made
(random, single-use, bound to the caller's principal and the tool), while the upstream's
call waits, at most `ANSWER_TIMEOUT` (and its call_timeout). The caller's retry with that
token, on any request, delivers its answer and waits for what comes next: the result, or
the next question. A token that is unknown, spent, another principal's or another tool's
is refused, and nothing runs again. Closing a request that waits for the call cancels it,
as closing a 2026-07-28 response stream does.
"""

from __future__ import annotations

import itertools
import secrets
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as types
from anyio.abc import TaskGroup
from mcp import MCPError

from ..principal import Principal
from ..upstreams.relay import (
    Asker,
    ElicitationAnswer,
    LogCallback,
    ProgressCallback,
    SamplingAnswer,
)

STATE_PREFIX = "gateway-asks."
"""How a `requestState` the gateway issued begins (an upstream's own never does)."""
MAX_OPEN_QUESTIONS = 16
"""Questions waiting for one principal's answers at once; beyond, the upstream is told
the caller cannot be asked now (one caller cannot pile up waiting calls)."""
ANSWER_MARGIN = 2.0
"""Seconds before the call's call_timeout by which an unanswered question is given up
(a quarter of call_timeout when that is shorter)."""
ANSWER_TIMEOUT = 300.0
"""Seconds an upstream's question waits for the caller's retry before the upstream is
told that the caller did not answer (the call's call_timeout caps it too)."""

Call = Callable[
    [Asker, ProgressCallback, LogCallback],
    Awaitable[types.CallToolResult | types.InputRequiredResult],
]
"""The call, given the asker and the progress and log relays to pass on."""


@dataclass(slots=True)
class _Question:
    key: str
    request: types.CreateMessageRequest | types.ElicitRequest
    answered: anyio.Event = field(default_factory=anyio.Event)
    answer: Any = None
    token: str | None = None
    """Of the requestState it was put to the caller with."""


@dataclass(slots=True)
class _Final:
    result: types.CallToolResult | types.InputRequiredResult | None = None
    error: BaseException | None = None


@dataclass(eq=False, slots=True)
class _Parked:
    principal: Principal
    tool: str
    arguments: dict[str, Any]
    deadline: float
    """When the upstream must have been told of an unanswered question: before the call's
    call_timeout, so that a caller's silence never counts as the upstream's failure."""
    events: deque[_Question | _Final] = field(default_factory=deque)
    """What the request waiting for the call (or the caller's next one) is to answer."""
    wake: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    tokens: set[str] = field(default_factory=set)
    over: bool = False
    relays: tuple[ProgressCallback | None, LogCallback | None] = (None, None)
    """The progress and log relays of the request waiting for the call, if any: the
    call's progress and logs go to whichever request of the caller waits for it."""

    def put(self, event: _Question | _Final) -> None:
        self.events.append(event)
        wake, self.wake = self.wake, anyio.Event()
        wake.set()

    async def next_event(self) -> _Question | _Final:
        while not self.events:
            await self.wake.wait()
        return self.events.popleft()

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        relay = self.relays[0]
        if relay is not None:
            await relay(progress, total, message)

    async def log(self, message: types.LoggingMessageNotificationParams) -> None:
        relay = self.relays[1]
        if relay is not None:
            await relay(message)


def can_be_asked(capabilities: types.ClientCapabilities | None) -> bool:
    return capabilities is not None and (
        capabilities.sampling is not None or capabilities.elicitation is not None
    )


class Bridge:
    def __init__(self, answer_timeout: float = ANSWER_TIMEOUT) -> None:
        self._answer_timeout = answer_timeout
        self._tasks: TaskGroup | None = None
        self._waiting: dict[str, tuple[_Parked, _Question]] = {}
        """Questions put to callers, by the token of the requestState issued with them."""
        self._keys = itertools.count(1)
        self._open: Counter[Principal] = Counter()
        """Questions asked and not yet answered, per principal."""

    async def run(self) -> None:
        """Hold the tasks bridged calls run in, until cancelled (which ends them)."""
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            try:
                await anyio.sleep_forever()
            finally:
                self._tasks = None
                self._waiting.clear()

    def can_ask(self, capabilities: types.ClientCapabilities | None) -> bool:
        """Whether a 2026-07-28 caller's call goes through the bridge."""
        return self._tasks is not None and can_be_asked(capabilities)

    @staticmethod
    def issued(request_state: str | None) -> bool:
        return request_state is not None and request_state.startswith(STATE_PREFIX)

    async def start(
        self,
        principal: Principal,
        params: types.CallToolRequestParams,
        capabilities: types.ClientCapabilities | None,
        call: Call,
        relays: tuple[ProgressCallback | None, LogCallback | None],
        call_timeout: float,
    ) -> types.CallToolResult | types.InputRequiredResult:
        """Run `call` in a task of its own; answer with its result, or with the first
        question its upstream asks. `relays`: this request's progress and log relays;
        `call_timeout`: the upstream's cap on the call."""
        tasks = self._tasks
        assert tasks is not None
        margin = min(ANSWER_MARGIN, call_timeout / 4)
        deadline = anyio.current_time() + call_timeout - margin
        parked = _Parked(principal, params.name, dict(params.arguments or {}), deadline)
        asker = _BridgeAsker(self, parked, capabilities)
        tasks.start_soon(self._drive, parked, call, asker)
        return await self._next(parked, relays)

    async def resume(
        self,
        principal: Principal,
        params: types.CallToolRequestParams,
        relays: tuple[ProgressCallback | None, LogCallback | None],
        permitted: Callable[[str, dict[str, Any]], bool],
    ) -> types.CallToolResult | types.InputRequiredResult:
        """A retry carrying a requestState the gateway issued: deliver its answer to the
        waiting upstream, and answer with what comes next. `permitted(tool, arguments)`
        checks the call again as it stands now: refused, the call is cancelled (and the
        refusal raised by `permitted` itself, or MCPError)."""
        token = (params.request_state or "").removeprefix(STATE_PREFIX)
        waiting = self._waiting.get(token)
        if waiting is None or waiting[0].principal != principal or waiting[0].tool != params.name:
            # Never run again: the caller's first call is still (or was) the call.
            raise MCPError(
                types.INVALID_PARAMS,
                "requestState is unknown or expired (the gateway issues one per question, "
                "usable once, by the caller it asked)",
            )
        parked, question = waiting
        try:
            allowed = permitted(parked.tool, parked.arguments)
        except BaseException:
            self._withdraw(parked)
            raise
        if not allowed:
            self._withdraw(parked)
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {parked.tool}")
        answer = (params.input_responses or {}).get(question.key)
        if answer is None:
            # Not answered: the question stands, under the same token.
            return _asking(question, token)
        del self._waiting[token]
        parked.tokens.discard(token)
        question.answer = answer
        question.answered.set()
        return await self._next(parked, relays)

    def _withdraw(self, parked: _Parked) -> None:
        """End a waiting call its caller may no longer make."""
        for token in list(parked.tokens):
            self._waiting.pop(token, None)
        parked.tokens.clear()
        parked.scope.cancel()

    async def _drive(self, parked: _Parked, call: Call, asker: _BridgeAsker) -> None:
        final = _Final()
        with parked.scope:
            try:
                final.result = await call(asker, parked.progress, parked.log)
            except Exception as exc:  # delivered to the request waiting for it
                final.error = exc
        parked.over = True
        # Questions still open have nobody to answer them now: their askers stop waiting.
        asked = [self._waiting.pop(token)[1] for token in parked.tokens if token in self._waiting]
        asked += [event for event in parked.events if isinstance(event, _Question)]
        parked.events.clear()
        parked.tokens.clear()
        for question in asked:
            question.answered.set()
        if not parked.scope.cancelled_caught:
            parked.put(final)

    async def _next(
        self, parked: _Parked, relays: tuple[ProgressCallback | None, LogCallback | None]
    ) -> types.CallToolResult | types.InputRequiredResult:
        parked.relays = relays
        try:
            event = await parked.next_event()
        except anyio.get_cancelled_exc_class():
            parked.scope.cancel()  # the caller closed its request: the call is cancelled
            raise
        finally:
            parked.relays = (None, None)
        if isinstance(event, _Final):
            if event.error is not None:
                raise event.error
            assert event.result is not None
            return event.result
        token = event.token = secrets.token_urlsafe(32)
        self._waiting[token] = (parked, event)
        parked.tokens.add(token)
        return _asking(event, token)

    async def ask(
        self,
        parked: _Parked,
        request: types.CreateMessageRequest | types.ElicitRequest,
        expected: tuple[type[Any], ...],
    ) -> Any:
        """Put `request` to the caller of `parked` and wait for the answer (or an error
        the upstream will see)."""
        question = _Question(f"{request.method.split('/')[0]}-{next(self._keys)}", request)
        if parked.over:  # nobody to ask
            return _NOT_ANSWERED
        if self._open[parked.principal] >= MAX_OPEN_QUESTIONS:
            return types.ErrorData(
                code=types.INVALID_REQUEST,
                message=f"the caller has {MAX_OPEN_QUESTIONS} questions waiting for its "
                "answers already",
            )
        self._open[parked.principal] += 1
        try:
            parked.put(question)
            wait = min(self._answer_timeout, parked.deadline - anyio.current_time())
            with anyio.move_on_after(max(0.0, wait)):
                await question.answered.wait()
        finally:
            self._open[parked.principal] -= 1
            if not self._open[parked.principal]:
                del self._open[parked.principal]
        if not question.answered.is_set():
            if question.token is not None:
                self._waiting.pop(question.token, None)
                parked.tokens.discard(question.token)
            return types.ErrorData(
                code=types.REQUEST_TIMEOUT,
                message="the caller did not answer in time",
            )
        if question.answer is None:  # the call ended first
            return _NOT_ANSWERED
        if not isinstance(question.answer, expected):
            return types.ErrorData(
                code=types.INVALID_PARAMS, message="the caller's answer is not of the kind asked"
            )
        return question.answer


def _asking(question: _Question, token: str) -> types.InputRequiredResult:
    return types.InputRequiredResult(
        input_requests={question.key: question.request}, request_state=STATE_PREFIX + token
    )


class _BridgeAsker:
    def __init__(
        self, bridge: Bridge, parked: _Parked, capabilities: types.ClientCapabilities | None
    ) -> None:
        self._bridge = bridge
        self._parked = parked
        self._declared = capabilities

    def capabilities(self) -> types.ClientCapabilities | None:
        return self._declared

    async def create_message(self, params: types.CreateMessageRequestParams) -> SamplingAnswer:
        if self._declared is None or self._declared.sampling is None:
            return _NO_SAMPLING
        request = types.CreateMessageRequest(params=params)
        expected = (types.CreateMessageResult, types.CreateMessageResultWithTools)
        answer: SamplingAnswer = await self._bridge.ask(self._parked, request, expected)
        return answer

    async def elicit(self, params: types.ElicitRequestParams) -> ElicitationAnswer:
        if self._declared is None or self._declared.elicitation is None:
            return _NO_ELICITATION
        request = types.ElicitRequest(params=params)
        answer: ElicitationAnswer = await self._bridge.ask(
            self._parked, request, (types.ElicitResult,)
        )
        return answer


_NO_SAMPLING = types.ErrorData(
    code=types.INVALID_REQUEST, message="the client does not support sampling"
)
_NO_ELICITATION = types.ErrorData(
    code=types.INVALID_REQUEST, message="the client does not support elicitation"
)
_NOT_ANSWERED = types.ErrorData(code=types.INVALID_REQUEST, message="the call is over")
