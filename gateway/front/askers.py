"""Askers: who puts an upstream's sampling and elicitation requests, made during a
call, to the caller whose call it is (upstreams/relay.py routes them to the call's
asker), or refuses them with an error the upstream sees.

A handshake-era caller is asked on its own session, as part of the call: through the
SDK's request context when the SDK serves the call (SessionAsker), through the session's
dispatcher when the gateway's own door does (DispatcherAsker, session_calls.py). A caller
that declared neither capability is refused (CannotBeAsked), and a 2026-07-28 caller is
asked by the upstream's InputRequiredResult, passed through, not during the call
(NoBackChannel).
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any, TypeVar

import mcp_types as types
from mcp import MCPError
from mcp.server import ServerRequestContext
from mcp.server.connection import Connection
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.message import ServerMessageMetadata
from mcp_types import RequestId
from mcp_types import methods as _methods
from pydantic import BaseModel

from ..upstreams.relay import ElicitationAnswer, SamplingAnswer

A = TypeVar("A", bound=BaseModel)


class SessionAsker:
    """Puts an upstream's sampling or elicitation request to a handshake-era caller, on
    its own session, as part of the call it concerns (through the SDK's request context
    of that call); refuses it (with an error the upstream sees) when the caller did not
    declare the capability."""

    def __init__(self, ctx: ServerRequestContext[Any]) -> None:
        self._ctx = ctx

    def capabilities(self) -> types.ClientCapabilities | None:
        """What the caller declared it can be asked."""
        return self._ctx.session.client_capabilities

    async def create_message(self, params: types.CreateMessageRequestParams) -> SamplingAnswer:
        capabilities = self.capabilities()
        if capabilities is None or capabilities.sampling is None:
            return _NO_SAMPLING
        request = types.CreateMessageRequest(params=params)
        if params.tools or params.tool_choice:
            return await self._ask(request, types.CreateMessageResultWithTools)
        return await self._ask(request, types.CreateMessageResult)

    async def elicit(self, params: types.ElicitRequestParams) -> ElicitationAnswer:
        capabilities = self.capabilities()
        if capabilities is None or capabilities.elicitation is None:
            return _NO_ELICITATION
        return await self._ask(types.ElicitRequest(params=params), types.ElicitResult)

    async def _ask(self, request: Any, result_type: type[A]) -> A | types.ErrorData:
        try:
            return await self._send(request, result_type)
        except MCPError as exc:
            return exc.error

    async def _send(self, request: Any, result_type: type[A]) -> A:
        metadata = ServerMessageMetadata(related_request_id=self._ctx.request_id)
        return await self._ctx.session.send_request(request, result_type, metadata=metadata)


class DispatcherAsker(SessionAsker):
    """SessionAsker for a call served without the SDK's request context
    (session_calls.py): the question goes through the session's JSON-RPC dispatcher,
    related to the call's request id, so the SDK's transport puts it on the call's
    stream (and in its event store) and routes the client's answer back, as it does for
    its own calls; the answer is checked as the SDK's ServerSession checks it."""

    def __init__(
        self, dispatcher: JSONRPCDispatcher[Any], connection: Connection, request_id: RequestId
    ) -> None:
        self._dispatcher = dispatcher
        self._connection = connection
        self._request_id = request_id

    def capabilities(self) -> types.ClientCapabilities | None:
        return self._connection.client_capabilities

    async def _send(self, request: Any, result_type: type[A]) -> A:
        data = request.model_dump(by_alias=True, mode="json", exclude_none=True)
        raw = await self._dispatcher.send_raw_request(
            data["method"], data.get("params"), None, _related_request_id=self._request_id
        )
        with suppress(KeyError):  # a method without a per-version surface
            _methods.validate_client_result(request.method, self._connection.protocol_version, raw)
        return result_type.model_validate(raw, by_name=False)


_NO_SAMPLING = types.ErrorData(
    code=types.INVALID_REQUEST, message="the client does not support sampling"
)
_NO_ELICITATION = types.ErrorData(
    code=types.INVALID_REQUEST, message="the client does not support elicitation"
)


def can_be_asked(connection: Connection) -> bool:
    """Whether a handshake-era caller declared sampling or elicitation, and so may be
    asked on its session during a call."""
    capabilities = connection.client_capabilities
    return capabilities is not None and (
        capabilities.sampling is not None or capabilities.elicitation is not None
    )


class CannotBeAsked:
    """The asker of a handshake-era caller that declared neither sampling nor elicitation:
    SessionAsker's refusals, without a session to ask on."""

    async def create_message(self, _params: types.CreateMessageRequestParams) -> SamplingAnswer:
        return _NO_SAMPLING

    async def elicit(self, _params: types.ElicitRequestParams) -> ElicitationAnswer:
        return _NO_ELICITATION


class NoBackChannel:
    """A 2026-07-28 caller cannot be asked in the middle of a call: only an upstream that
    answers with InputRequiredResult (passed through to the caller) can ask it anything."""

    async def create_message(self, _params: types.CreateMessageRequestParams) -> SamplingAnswer:
        return _NO_BACK_CHANNEL

    async def elicit(self, _params: types.ElicitRequestParams) -> ElicitationAnswer:
        return _NO_BACK_CHANNEL


_NO_BACK_CHANNEL = types.ErrorData(
    code=types.INVALID_REQUEST,
    message="the caller speaks 2026-07-28 and cannot be asked during a call; "
    "ask it with an InputRequiredResult instead",
)
