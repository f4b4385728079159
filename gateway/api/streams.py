"""A session's events, followed live: `GET /events/{id}` (Server-Sent Events) and
`WebSocket /ws/{id}` (also `/ws`, which starts a session first). Both send the frames of
events.py; the WebSocket also takes the caller's word (answer, approve, reject, edit,
cancel) on the same connection, each frame answered with an `ack` or an `error` (a bad
frame leaves the socket usable; a command under way is answered before it closes).

Browsers cannot set headers on a WebSocket, so it authenticates with a short-lived,
single-use token from `POST /tokens` (`?token=`), never an API key in a URL; a client
that can send headers may use its credential as on REST. A token minted for a session
opens that session only; one minted for none opens `/ws`, or any of its caller's own
sessions (what a widget reconnects with). An upgrade from an Origin that
is neither the gateway's own, nor in server.allowed_origins or api.widget_origins, is
refused before it is accepted (a page elsewhere cannot drive a user's session).

A stream holds no buffer of its own: it reads the session's stream at its client's pace,
and a client that takes no frame for api.send_timeout seconds is disconnected (a slow
reader costs the gateway one idle connection, and nobody else any time). A stream ends
when its credential is revoked or expires (OpenRequests), as /mcp requests do: an SSE
response still ends as a stream does, a WebSocket closes with 1008.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing, suppress
from typing import Any, Final

import anyio
from pydantic import ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .. import jsoncodec
from ..auth import Authenticator, Credential
from ..errors import ApiError, StateUnavailable
from ..live import OpenRequests, Vouched
from ..principal import Principal
from ..state.base import START
from .bodies import describe
from .events import frames, resume_point
from .hosts import listed
from .models import Cancel, Decision, Interaction, NewSession
from .sessions import NO_STORE, SessionApi, authenticated
from .settings import ApiSettings

logger = logging.getLogger("gateway.api")

POLICY_VIOLATION: Final = 1008
NOT_FOUND: Final = 4404
BAD_REQUEST: Final = 4400
TOO_SLOW: Final = 4408
TRY_LATER: Final = 1013
UNAVAILABLE: Final = "state store unavailable; retry later"
MAX_FRAME: Final = 256 * 1024
"""Bytes of one frame a WebSocket client sends, at most."""


class Guarded(Response):
    """A response served inside a cancel scope that a revoked credential cancels; a
    stream cut so still ends as a stream does (its last, empty chunk), not torn off. One
    whose client reads too slowly is left unfinished: the server drops the connection."""

    def __init__(self, inner: Response, open_: OpenRequests, caller: Credential) -> None:
        self.inner, self.open_, self.caller = inner, open_, caller
        self.status_code, self.background = inner.status_code, None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = ended = False

        async def sending(message: Message) -> None:
            nonlocal started, ended
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                ended = True
            await send(message)

        with anyio.CancelScope() as guard, self.open_.open(self.caller, guard):
            try:
                await self.inner(scope, receive, sending)
            except SendTimeoutError:  # its buffers are full: it reads too slowly
                logger.warning("an SSE client did not keep up with its stream: disconnected")
                return  # unfinished: the server drops the connection
        if guard.cancel_called and started and not ended:  # revoked, or it expired
            with anyio.move_on_after(1), suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})


class Streams:
    def __init__(
        self,
        api: SessionApi,
        settings: ApiSettings,
        allowed_hosts: tuple[str, ...],
        allowed_origins: tuple[str, ...],
        open_: OpenRequests,
    ) -> None:
        self.api = api
        self.settings = settings
        self.origins = (*allowed_origins, *settings.widget_origins)
        self.hosts = allowed_hosts
        self.open = open_

    # --- SSE ---------------------------------------------------------------------------

    async def sse(self, request: Request) -> Response:
        caller = self.api.caller(request)
        session_id = request.path_params["session_id"]
        after = resume_point(request.headers.get("last-event-id"), "Last-Event-ID")
        snapshot = await self.api.owned_snapshot(caller, session_id)
        view = self._view(caller, snapshot)

        async def content() -> Any:
            stream = frames(self.api.store, session_id, after, view)
            try:
                async with aclosing(stream) as followed:
                    async for event_id, frame in followed:
                        yield ServerSentEvent(data=jsoncodec.dumps(frame).decode(), id=event_id)
            except StateUnavailable as exc:  # the response has begun: end it, say when to return
                logger.warning(
                    "session %s: its stream ends, the store is away: %s", session_id, exc
                )
                yield ServerSentEvent(retry=max(1000, int(exc.retry_after * 1000)))
            except Exception:  # a bug: logged; the stream ends, and the client may resume
                logger.exception("session %s: its event stream failed", session_id)

        response = EventSourceResponse(
            content(),
            ping=self.settings.keepalive,
            send_timeout=self.settings.send_timeout,
            headers={**NO_STORE, "X-Accel-Buffering": "no"},
        )
        return Guarded(response, self.open, caller)

    def _view(
        self, caller: Credential, snapshot: dict[str, Any]
    ) -> Callable[[], Awaitable[dict[str, Any]]]:
        """The snapshot frame's view, of the snapshot read to check the caller (frames
        makes it once, when the connection is made)."""

        async def view() -> dict[str, Any]:
            return dict((await self.api.view(caller, snapshot)).model_dump())

        return view

    # --- WebSocket ---------------------------------------------------------------------

    async def websocket(self, ws: WebSocket) -> None:
        # The token is taken first, whatever follows: one shown to a refused upgrade (in
        # a log, on a foreign page) is spent, never left to work for another.
        admitted = await self._admit(ws)
        if not listed(ws.headers.get("host", ""), self.hosts):
            logger.warning("WebSocket to a foreign Host refused: %s", ws.headers.get("host"))
            await ws.close(POLICY_VIOLATION)
            return
        origin = ws.headers.get("origin")
        if origin is not None and not self._origin_allowed(origin, ws.headers.get("host")):
            logger.warning("WebSocket from a foreign Origin refused: %s", origin)
            await ws.close(POLICY_VIOLATION)  # before accept: the upgrade gets 403
            return
        if admitted is None:
            await ws.close(POLICY_VIOLATION)
            return
        caller, vouched, bound = admitted
        session_id = ws.path_params.get("session_id")
        if bound is not None and session_id != bound:  # a token opens its session only
            await ws.close(POLICY_VIOLATION)
            return
        await ws.accept()
        with anyio.CancelScope() as guard, self.open.open(caller, guard, vouched):
            try:
                await self._serve(ws, caller, session_id)
            except WebSocketDisconnect:
                return
            except ApiError as exc:
                await self._refuse(ws, exc)
            except StateUnavailable:
                await self._refuse(ws, ApiError(503, "unavailable", UNAVAILABLE))
        # The session ended, or the credential was revoked (or expired).
        await self._close(ws, POLICY_VIOLATION if guard.cancel_called else 1000)

    async def _serve(self, ws: WebSocket, caller: Credential, session_id: str | None) -> None:
        if session_id is None:
            with anyio.move_on_after(self.settings.start_timeout) as waiting:
                first = await self._frame(ws)
            if waiting.cancelled_caught:
                raise ApiError(408, "timeout", "no start frame came")
            if first.get("type") != "start":
                raise ApiError(400, "invalid_frame", "the first frame must be a start")
            created = await self.api.start(caller, _body(NewSession, first, {"type"}))
            session_id = created.id
            await self._send(ws, {"type": "started", "session": created.model_dump()})
            after = START
        else:
            after = resume_point(ws.query_params.get("since"), "since")
        snapshot = await self.api.owned_snapshot(caller, session_id)
        view = self._view(caller, snapshot)
        # Why the connection ends before its session does: a task's own failure comes
        # out as it is, not in the task group's ExceptionGroup.
        ended: list[Exception] = []

        async def watched(task: Callable[[], Awaitable[None]]) -> None:
            try:
                await task()
            except (ApiError, WebSocketDisconnect, StateUnavailable) as exc:
                ended.append(exc)
            except Exception as exc:  # a bug: logged, and the socket closed as failed
                logger.exception("session %s: its WebSocket failed", session_id)
                ended.append(ApiError(500, "internal_error", "the gateway failed (logged)"))
                del exc
            tasks.cancel_scope.cancel()  # one ends (the session's end too): all do

        async def pump() -> None:
            stream = frames(self.api.store, session_id, after, view)
            async with aclosing(stream) as followed:
                async for _event_id, frame in followed:
                    await self._send(ws, frame)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(watched, pump)
            tasks.start_soon(watched, lambda: self._ping(ws))
            tasks.start_soon(watched, lambda: self._listen(ws, caller, session_id))
        if ended:
            raise ended[0]

    async def _listen(self, ws: WebSocket, caller: Credential, session_id: str) -> None:
        """The caller's word, each frame answered (an ack, or an error frame: a bad frame
        leaves the socket usable)."""
        while True:
            try:
                frame = await self._frame(ws)
            except ApiError as exc:
                await self._send(ws, _error(exc))
                continue
            # A command under way is not cut short by the session's end (which it may
            # bring about: a cancel) and is answered before the socket closes.
            with anyio.CancelScope(shield=True):
                try:
                    answer = await self._command(caller, session_id, frame)
                except ApiError as exc:
                    answer = _error(exc)
                except StateUnavailable:
                    answer = _error(ApiError(503, "unavailable", UNAVAILABLE))
                await self._send(ws, answer)

    async def _command(
        self, caller: Credential, session_id: str, frame: dict[str, Any]
    ) -> dict[str, Any]:
        kind = frame.get("type")
        if kind == "interact":
            await self.api.answer(caller, session_id, _body(Interaction, frame, {"type"}))
        elif kind in ("approve", "reject", "edit"):
            approval = frame.get("approval")
            if not isinstance(approval, str):
                raise ApiError(422, "invalid_frame", "approval: the approval's id is required")
            fields = {k: v for k, v in frame.items() if k not in ("type", "approval")}
            body = _body(Decision, {**fields, "decision": kind}, set())
            await self.api.approve(caller, session_id, approval, body)
        elif kind == "cancel":
            await self.api.stop(caller, session_id, _body(Cancel, frame, {"type"}))
        else:
            raise ApiError(
                400,
                "invalid_frame",
                "type must be interact, approve, reject, edit or cancel",
            )
        return {"type": "ack", "for": kind}

    async def _frame(self, ws: WebSocket) -> dict[str, Any]:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        raw = message.get("text") or message.get("bytes") or b""
        if len(raw.encode() if isinstance(raw, str) else raw) > MAX_FRAME:
            raise ApiError(413, "frame_too_large", f"a frame is at most {MAX_FRAME} bytes")
        try:
            frame = jsoncodec.loads(raw)
        except ValueError as exc:
            raise ApiError(400, "invalid_json", f"the frame is not valid JSON: {exc}") from None
        if not isinstance(frame, dict):
            raise ApiError(400, "invalid_frame", "a frame must be a JSON object")
        return frame

    async def _send(self, ws: WebSocket, frame: dict[str, Any]) -> None:
        with anyio.move_on_after(self.settings.send_timeout) as sending:
            await ws.send_text(jsoncodec.dumps(frame).decode())
        if sending.cancelled_caught:  # its buffers are full: it reads too slowly
            raise ApiError(408, "too_slow", "the client did not keep up with its stream")

    async def _ping(self, ws: WebSocket) -> None:
        while True:
            await anyio.sleep(self.settings.keepalive)
            await self._send(ws, {"type": "ping", "at": time.time()})

    async def _refuse(self, ws: WebSocket, exc: ApiError) -> None:
        """Say why the socket closes (but to a client too slow to read it), and close."""
        if exc.code != "too_slow" and ws.application_state is WebSocketState.CONNECTED:
            with anyio.move_on_after(1), suppress(WebSocketDisconnect):
                await ws.send_text(jsoncodec.dumps(_error(exc)).decode())
        code = {404: NOT_FOUND, 408: TOO_SLOW, 500: 1011, 503: TRY_LATER}.get(
            exc.status, BAD_REQUEST
        )
        await self._close(ws, code, exc.detail[:120])

    async def _close(self, ws: WebSocket, code: int, reason: str = "") -> None:
        """Close the socket, if still open: bounded, since a client that does not read
        may never take the close frame (its connection is then left to the server)."""
        if ws.application_state is not WebSocketState.CONNECTED:
            return
        with anyio.move_on_after(self.settings.send_timeout), suppress(WebSocketDisconnect):
            await ws.close(code, reason)

    async def _admit(self, ws: WebSocket) -> tuple[Credential, Vouched | None, str | None] | None:
        """Who opens the WebSocket: a single-use token's caller (and the session it was
        minted for), or the credential in its headers; None when neither."""
        token = ws.query_params.get("token")
        if token is None:
            authenticator = self.api.authenticator()
            try:
                return authenticated(authenticator, _as_request(ws)), None, None
            except ApiError:
                return None
        grant = await self.api.store.take_token(token)
        if grant is None:
            return None
        principal = Principal(grant["user"], grant["org"], tuple(grant["roles"]))
        vouch = grant["vouch"]
        expires = vouch.get("expires_at")
        caller = Credential(
            principal,
            "local",
            f"token:{vouch.get('label')}",
            expires_at=float(expires) if isinstance(expires, int | float) else None,
        )
        vouched = _vouched(vouch, principal)
        # Minted by a credential revoked (or expired) since: it opens nothing.
        if not vouched(self.api.authenticator()) or (
            caller.expires_at is not None and caller.expires_at <= time.time()
        ):
            return None
        return caller, vouched, grant.get("session_id")

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        if host is not None and origin.split("://", 1)[-1] == host:
            return True  # the gateway's own page (its Host was checked first)
        return listed(origin, self.origins)


def _vouched(vouch: dict[str, Any], principal: Principal) -> Vouched:
    """How a token's stream is checked when credentials change: the API key it was
    minted with still names the same principal, or the JWT's id is not revoked."""

    def vouched(authenticator: Authenticator) -> bool:
        if vouch.get("kind") == "api_key":
            return authenticator.key_principal(str(vouch.get("digest"))) == principal
        if vouch.get("kind") == "jwt":
            return authenticator.jwt_still_valid(vouch.get("jti"), vouch.get("fingerprint"))
        return True

    return vouched


def _error(exc: ApiError) -> dict[str, Any]:
    return {"type": "error", "error": exc.code, "detail": exc.detail}


def _body(model: type[Any], frame: dict[str, Any], drop: set[str]) -> Any:
    try:
        return model.model_validate({k: v for k, v in frame.items() if k not in drop})
    except ValidationError as exc:
        raise ApiError(422, "invalid_frame", describe(exc)) from None


def _as_request(ws: WebSocket) -> Request:
    return Request({**ws.scope, "type": "http"})
