"""`/mcp`: MCP over streamable HTTP, behind the gateway's authentication.

Every request is authenticated before the SDK sees it (401 with a WWW-Authenticate
challenge otherwise, and not a word about tools). The caller is then:
- put where the handlers read it (`caller.current_credential`);
- handed to the SDK as the request's user, so that a handshake-era MCP session is bound to
  the principal that opened it (the same session id with another caller's credentials
  gets 404, as if it did not exist);
- tracked while the request lasts, so that revoking its credential (an edited gateway.yaml)
  or reaching its expiry (a JWT's exp) ends it, long-lived streams included.

/mcp bypasses Starlette's middleware (app.py: it costs a proxied call more than the
gateway's own checks), so what must see every request (metrics, rate limits) registers a
request hook here (`McpEndpoint.on_request`): told of each request once it ended, with
its principal (None when refused before one was known) and status. Without hooks, a
request pays nothing for them.

Host and Origin headers are checked against the configured allow-lists (421 and 403), which
defeats DNS rebinding. Every POST is then checked here, for every door (modern_calls.py,
session_calls.py and the SDK's), as the SDK checks it but answered as a JSON-RPC error
(application/json, id null) where the SDK answers plain text or nothing: a Content-Type
other than application/json (400), a 2026-07-28 request that does not accept both JSON and
SSE (406), a body beyond MAX_BODY (413), a body that is not JSON (-32700 Parse error, 400).
Not JSON includes what the SDK's parsers let through: `NaN`, `Infinity` and `-Infinity`
(not JSON, RFC 8259) and text that is not valid Unicode (a lone surrogate escape such as
`"\\ud800"`, which no encoder can write to an upstream), anywhere in the body, keys
included. Requests whose JSON-RPC id is null, a boolean or a fraction are refused as
Invalid Request: the SDK would otherwise accept them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import mcp_types as types
from mcp.server.auth.middleware.bearer_auth import (
    AuthenticatedUser,
    AuthorizationContext,
    authorization_context,
)
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http import check_accept_headers
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import jsoncodec
from ..auth import Authenticator, Credential
from ..errors import Unauthenticated
from ..live import OpenRequests
from ..principal import Principal
from ..subscribers import Subscribers
from .caller import current_credential
from .modern_calls import ModernCalls, is_modern_tools_request
from .session_calls import SessionCalls, is_session_tools_request

logger = logging.getLogger("gateway.front")

MAX_BODY = 4 * 1024 * 1024
"""The largest request body /mcp reads (the SDK's own limit)."""


@dataclass(frozen=True, slots=True)
class McpRequest:
    """What a request hook is told of one /mcp request, once it ended."""

    method: str
    """The HTTP method."""
    principal: Principal | None
    """None: refused before its caller was known (401, or a client gone before)."""
    status: int
    """The response's status; 0 when none was sent (the client went away first)."""
    seconds: float


RequestHook = Callable[[McpRequest], None]
"""Runs in the request's task: keep it quick. An exception is logged, nothing more."""
PRINCIPAL_KEY = "gateway.principal"
"""Where the request's scope holds the authenticated principal, for the hooks."""


class McpEndpoint:
    """The ASGI app mounted at `/mcp` (as a Route, so there is no redirect to `/mcp/`)."""

    def __init__(
        self,
        manager: StreamableHTTPSessionManager,
        authenticator: Callable[[], Authenticator],
        calls: ModernCalls | None = None,
        session_calls: SessionCalls | None = None,
        security: TransportSecuritySettings | None = None,
    ) -> None:
        """`calls` and `session_calls`: where tools/call and tools/list requests of
        2026-07-28 callers (modern_calls.py) and of handshake-era sessions (session_calls.py) go;
        without them, the SDK serves them too. `security`: the Host and Origin allow-lists
        (the SDK's settings)."""
        self._app = StreamableHTTPASGIApp(manager)
        self._security = TransportSecurityMiddleware(security)
        self._calls = calls
        self._session_calls = session_calls
        self._authenticator = authenticator
        self.open = OpenRequests("MCP requests")

        self._hooks = Subscribers[RequestHook](on_change=self._rewire)
        self.serve: ASGIApp = self._serve
        """The endpoint's ASGI app as it stands: without hooks, the request's own work
        and nothing around it (GatewayApp calls this, one frame less than `__call__`)."""

    @property
    def live_requests(self) -> int:
        return len(self.open)

    def on_request(self, hook: RequestHook) -> Callable[[], None]:
        """Tell `hook` of every request from now on; returns what stops it (once; again,
        it does nothing)."""
        return self._hooks.add(hook)

    def _rewire(self) -> None:
        self.serve = self._observed if self._hooks.current else self._serve

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.serve(scope, receive, send)

    async def _observed(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 0

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._serve(scope, receive, observed)
        finally:
            seen = McpRequest(
                scope["method"], scope.get(PRINCIPAL_KEY), status, time.perf_counter() - started
            )
            for hook in self._hooks.current:
                try:
                    hook(seen)
                except Exception:
                    logger.exception("a request hook failed")

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        client = scope.get("client")
        try:
            caller = self._authenticator().authenticate(headers, client[0] if client else None)
        except Unauthenticated as exc:
            response = JSONResponse(
                {"error": "unauthorized", "error_description": exc.reason},
                status_code=401,
                headers={"WWW-Authenticate": exc.challenge()},
            )
            await response(scope, receive, send)
            return
        scope[PRINCIPAL_KEY] = caller.principal
        fast: dict[str, Any] | None = None
        on_session: dict[str, Any] | None = None
        cancelling: tuple[str, str] | None = None
        if scope["method"] == "POST":
            refused = await self._refused(Request(scope), headers)
            if refused is not None:
                await refused(scope, receive, send)
                return
            body = await _read_body(receive)
            if body is None:
                await _json_rpc_error(413, types.INVALID_REQUEST, "request body too large")(
                    scope, receive, send
                )
                return
            message = _parse(body)
            if isinstance(message, _NotJson):
                await _json_rpc_error(400, types.PARSE_ERROR, f"Parse error: {message.reason}")(
                    scope, receive, send
                )
                return
            problem = _bad_id(message)
            if problem is not None:
                await _json_rpc_error(400, types.INVALID_REQUEST, problem)(scope, receive, send)
                return
            if self._calls is not None and is_modern_tools_request(message, headers):
                fast = message
            else:
                receive = _replay(body, receive)
                if self._session_calls is not None:
                    if is_session_tools_request(message, headers):
                        on_session = message
                    else:
                        cancelling = self._session_calls.cancellation(message, headers)
        reset = current_credential.set(caller)
        try:
            with anyio.CancelScope() as request_scope, self.open.open(caller, request_scope):
                if fast is not None and self._calls is not None:
                    await self._calls.serve(scope, receive, send, fast, headers, caller.principal)
                elif (
                    on_session is None
                    or self._session_calls is None
                    or not await self._session_calls.serve(
                        scope,
                        receive,
                        send,
                        on_session,
                        headers,
                        _requestor(caller),
                        caller.principal,
                    )
                ):  # not served on the session by session_calls.py: the SDK's
                    await self._sdk(scope, receive, send, caller, headers, cancelling)
        finally:
            current_credential.reset(reset)

    async def _refused(self, request: Request, headers: dict[str, str]) -> Response | None:
        """What answers a POST whose headers the SDK would refuse, in the SDK's order."""
        if not _is_json(headers.get("content-type")):
            return _json_rpc_error(
                400,
                types.INVALID_REQUEST,
                "Unsupported Media Type: Content-Type must be application/json",
            )
        refused = await self._security.validate_request(request, is_post=True)
        if refused is not None:  # Host or Origin (421, 403)
            return refused
        version = headers.get(MCP_PROTOCOL_VERSION_HEADER)
        if (
            version is not None
            and version not in _HANDSHAKE
            and not all(check_accept_headers(request))
        ):  # a handshake-era transport answers this itself, alike
            return _json_rpc_error(
                406,
                types.INVALID_REQUEST,
                "Not Acceptable: Client must accept both application/json and text/event-stream",
            )
        return None

    async def _sdk(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        caller: Credential,
        headers: dict[str, str],
        cancelling: tuple[str, str] | None,
    ) -> None:
        """The SDK serves the request; `cancelling`: a call of session_calls.py that the
        request cancels, once the SDK has accepted it (202)."""
        status: list[int] = []
        if cancelling is not None:
            send = _status_seen(send, status)
        await self._app({**scope, "user": _user(caller)}, receive, send)
        if self._session_calls is None:
            return
        if cancelling is not None and status == [202]:
            self._session_calls.cancel(*cancelling, _requestor(caller))
        if scope["method"] == "DELETE":
            self._session_calls.check_ended(headers)

    def recheck(self, authenticator: Authenticator) -> int:
        """End the requests (streams included) whose credential no longer identifies the
        same principal under `authenticator`. Returns how many were ended."""
        return self.open.recheck(authenticator)


def _status_seen(send: Send, status: list[int]) -> Send:
    async def seen(message: Message) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        await send(message)

    return seen


def _requestor(caller: Credential) -> AuthorizationContext:
    """Who `caller` is to the SDK's session ownership check."""
    return authorization_context(_user(caller))


def _user(caller: Credential) -> AuthenticatedUser:
    """`caller` as the SDK's request user, which it binds a new MCP session to."""
    return AuthenticatedUser(
        AccessToken(
            token=caller.label,
            client_id=caller.owner,
            scopes=[],
            subject=caller.principal.user_id,
            claims={"iss": "mcp-tag-gateway"},
        )
    )


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the already-read body once, then what the client sends next
    (its disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


_HANDSHAKE = frozenset(HANDSHAKE_PROTOCOL_VERSIONS)


def _is_json(content_type: str | None) -> bool:
    """The SDK's rule for a POST's Content-Type (TransportSecurityMiddleware's)."""
    return content_type is not None and content_type.lower().startswith("application/json")


class _NotJson:
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _parse(body: bytes) -> Any:
    """The body as JSON (strictly: see the module docstring), or why it is not."""
    if not body:
        return _NotJson("the body is empty")
    try:  # every body: a key may be spelt with escapes (`"\u0069d"`)
        return jsoncodec.loads(body)
    except RecursionError:
        return _NotJson("the body is nested too deeply")
    except ValueError as exc:
        # orjson's reason, with where; the rule it broke, for a reader who sent NaN.
        return _NotJson(
            f"the body is not JSON (RFC 8259: UTF-8, valid Unicode text, no NaN or Infinity): {exc}"
        )


def _bad_id(parsed: Any) -> str | None:
    """Why a JSON-RPC message's id is unacceptable (null, boolean, fractional), if it is.
    Anything else is left to the SDK to answer."""
    for message in parsed if isinstance(parsed, list) else [parsed]:
        if not isinstance(message, dict) or "id" not in message or "method" not in message:
            continue
        request_id = message["id"]
        if request_id is None or isinstance(request_id, bool):
            return f"a request id must be a string or an integer, not {json.dumps(request_id)}"
        if isinstance(request_id, float):
            return f"a request id must be a string or an integer, not {request_id!r}"
    return None


def _json_rpc_error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}},
        status_code=status,
    )
