"""The session API's REST endpoints: start a session, read it, list the caller's, answer
its question, decide its approval, cancel it, and mint a WebSocket's token.

A caller only ever sees its own sessions (its user in its org): any other id answers 404,
the same 404 as an id that does not exist. A session runs in the background of whichever
replica took the request that started or answered it; its caller reads it, follows it
and answers it through any replica, since all of it is in the state store.

New input while a session works is refused (409): a session takes an answer when it
asks (`input_required`), and nothing in between; LangGraph's `reject` strategy, which
keeps a session's transcript the model's own (no message slipped in mid-turn).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Final

import anyio
from anyio.abc import TaskGroup
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..auth import Authenticator, Credential, key_digest
from ..engine.loop import Engine, Go
from ..engine.session import Session
from ..engine.states import FINAL, RUNNING
from ..errors import (
    ApiError,
    InvalidApproval,
    InvalidFlowInput,
    SessionNotWaiting,
    SessionTaken,
    Unauthenticated,
    UnknownFlow,
)
from ..principal import Principal
from ..state.base import Stream
from ..tags.context import ResolvedContext
from .bodies import read_body
from .models import (
    Accepted,
    Cancel,
    Created,
    Decision,
    Interaction,
    Links,
    NewSession,
    SessionList,
    SessionSummary,
    Status,
    Token,
    TokenRequest,
)
from .views import owned, session_view, summary
from .webhooks import Webhooks

logger = logging.getLogger("gateway.api")

TOKEN_SECONDS: Final = 60.0
"""How long a WebSocket's token works (once)."""
PAGE: Final = 20
MAX_PAGE: Final = 100
SETTLING_READS: Final = 25
"""Reads of a snapshot behind its stream's last move, 20 ms apart, at most."""
LIST_READS: Final = 10
"""Pages of the index read for one page of a filtered listing, at most."""
STATUSES: Final = frozenset(Status.__args__)  # type: ignore[attr-defined]

Resolve = Callable[[Principal, str | None], ResolvedContext]


def authenticated(authenticator: Authenticator, request: Request) -> Credential:
    """The caller of `request`, or 401 (with the challenge RFC 6750 asks for)."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    client = request.client
    try:
        return authenticator.authenticate(headers, client.host if client else None)
    except Unauthenticated as exc:
        raise ApiError(
            401, "unauthorized", exc.reason, {"WWW-Authenticate": exc.challenge()}
        ) from None


def not_found(session_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no session {session_id!r}")


class SessionApi:
    def __init__(
        self,
        engine: Engine,
        resolve: Resolve,
        authenticator: Callable[[], Authenticator],
        webhooks: Webhooks | None = None,
    ) -> None:
        """`authenticator()`: the current one (gateway.yaml's `auth:` is reloaded).
        `webhooks`: what checks a session's callback_url (none: no callbacks)."""
        self.engine = engine
        self.webhooks = webhooks
        self.store = engine.recorder.store
        self.resolve = resolve
        self.authenticator = authenticator
        self.tasks: TaskGroup | None = None
        """Where sessions run in the background: the app's, while it serves."""

    def caller(self, request: Request) -> Credential:
        return authenticated(self.authenticator(), request)

    # --- the endpoints -----------------------------------------------------------------

    async def create(self, request: Request) -> JSONResponse:
        caller = self.caller(request)
        created = await self.start(caller, await read_body(request, NewSession))
        return JSONResponse(
            created.model_dump(), status_code=201, headers={"Location": created.links.self}
        )

    async def start(self, caller: Credential, body: NewSession) -> Created:
        """Start a session for `caller` and run it in the background."""
        if not body.message and body.flow is None:
            raise ApiError(422, "invalid_body", "message: a session needs one (or a flow)")
        principal = caller.principal
        if body.callback_url is not None:
            refused = (
                "this gateway sends no webhooks"
                if self.webhooks is None
                else self.webhooks.check_target(principal.org_id, body.callback_url)
            )
            if refused is not None:
                raise ApiError(422, "invalid_callback", f"callback_url: {refused}")
        context = self.resolve(principal, body.intent)
        try:
            session = await self.engine.start(
                context,
                body.message or "",
                flow=body.flow,
                inputs=body.inputs,
                callback=body.callback_url,
            )
        except UnknownFlow as exc:
            raise ApiError(422, "unknown_flow", str(exc)) from None
        except InvalidFlowInput as exc:
            raise ApiError(422, "invalid_inputs", str(exc)) from None
        self._go(session, None)  # first: a claimed session left unrun is a phantom
        try:
            await self.store.index_session(
                principal.org_id, principal.user_id, session.id, session.created
            )
        except Exception as exc:  # it runs, and its id is the caller's: only the list misses it
            logger.warning("session %s: not in its user's list: %s", session.id, exc)
        return Created(id=session.id, status=session.state.value, links=links(session.id))

    async def show(self, request: Request) -> JSONResponse:
        caller = self.caller(request)
        snapshot = await self.owned_snapshot(caller, request.path_params["session_id"])
        return JSONResponse((await self.view(caller, snapshot)).model_dump())

    async def listing(self, request: Request) -> JSONResponse:
        caller = self.caller(request)
        principal = caller.principal
        query = request.query_params
        unknown = set(query) - {"status", "limit", "cursor"}
        if unknown:
            raise ApiError(
                400, "invalid_query", f"unknown parameters: {', '.join(sorted(unknown))}"
            )
        status = query.get("status")
        if status is not None and status not in STATUSES:
            raise ApiError(
                400, "invalid_query", f"status must be one of {', '.join(sorted(STATUSES))}"
            )
        limit = _number(query.get("limit"), "limit", int, PAGE)
        if not 1 <= limit <= MAX_PAGE:
            raise ApiError(400, "invalid_query", f"limit must be from 1 to {MAX_PAGE}")
        before = _number(query.get("cursor"), "cursor", float, None)
        found: list[SessionSummary] = []
        more = exhausted = False
        for _ in range(LIST_READS):
            page = await self.store.indexed_sessions(
                principal.org_id, principal.user_id, before, limit
            )
            gone = []
            for session_id, created in page:
                before = created
                snapshot = await self.store.get_session_state(session_id)
                if not owned(snapshot, principal.user_id, principal.org_id):
                    gone.append(session_id)
                    continue
                assert snapshot is not None
                if status is None or snapshot["state"] == status:
                    if len(found) == limit:
                        more = True
                        break
                    found.append(summary(snapshot))
            if gone:
                await self.store.unindex_sessions(principal.org_id, principal.user_id, gone)
            exhausted = len(page) < limit
            if more or exhausted:
                break
        if more:
            cursor: str | None = repr(found[-1].created)
        else:  # a filter left the page short after LIST_READS reads: go on from there
            cursor = None if exhausted or before is None else repr(before)
        return JSONResponse(SessionList(sessions=found, next=cursor).model_dump())

    async def interact(self, request: Request) -> JSONResponse:
        caller = self.caller(request)
        session_id = request.path_params["session_id"]
        await self.owned_snapshot(caller, session_id)  # 404 before the body's checks
        answered = await self.answer(caller, session_id, await read_body(request, Interaction))
        return JSONResponse(answered.model_dump(), status_code=202)

    async def decide(self, request: Request) -> JSONResponse:
        caller = self.caller(request)
        session_id = request.path_params["session_id"]
        await self.owned_snapshot(caller, session_id)
        body = await read_body(request, Decision)
        decided = await self.approve(caller, session_id, request.path_params["approval"], body)
        return JSONResponse(decided.model_dump(), status_code=202)

    async def cancel(self, request: Request) -> JSONResponse:
        caller = self.caller(request)
        session_id = request.path_params["session_id"]
        await self.owned_snapshot(caller, session_id)
        body = await read_body(request, Cancel, optional=True)
        stopped = await self.stop(caller, session_id, body)
        return JSONResponse(stopped.model_dump(), status_code=202)

    # --- what a REST call and a WebSocket frame ask alike --------------------------------

    async def answer(self, caller: Credential, session_id: str, body: Interaction) -> Accepted:
        """Answer the session's question, and run it on in the background."""
        session = await self.settled(caller, session_id)
        if body.question is not None and body.question != session.last_event:
            raise ApiError(409, "not_waiting", "that question was answered already")
        try:
            first = await self.engine.take_answer(session, body.message)
        except SessionNotWaiting as exc:
            raise _not_waiting(session, exc) from None
        self._go(session, first)
        return Accepted(id=session.id, status="working")

    async def approve(
        self, caller: Credential, session_id: str, approval: str, body: Decision
    ) -> Accepted:
        """Decide the session's pending approval `approval`, and run it on."""
        session = await self.settled(caller, session_id)
        if session.waiting == "approval" and session.last_event != approval:
            raise ApiError(404, "not_found", f"no pending approval {approval!r}")
        try:
            edits = {int(index): args for index, args in (body.arguments or {}).items()}
        except ValueError:
            raise ApiError(
                422, "invalid_body", "arguments: keys must be call indexes (0, 1, ...)"
            ) from None
        try:
            first = await self.engine.take_verdict(session, body.decision, body.message, edits)
        except SessionNotWaiting as exc:
            raise _not_waiting(session, exc) from None
        except InvalidApproval as exc:
            raise ApiError(422, "invalid_approval", str(exc)) from None
        self._go(session, first)
        return Accepted(id=session.id, status="working")

    async def stop(self, caller: Credential, session_id: str, body: Cancel) -> Accepted:
        """Cancel the session (see Engine.cancel): 409 when it has ended."""
        session = await self.session(caller, session_id)
        try:
            await self.engine.cancel(session, body.mode)
        except SessionNotWaiting as exc:
            raise ApiError(409, "already_ended", str(exc)) from None
        return Accepted(id=session.id, status=session.state.value)

    async def token(self, request: Request) -> JSONResponse:
        caller = self.caller(request)
        body = await read_body(request, TokenRequest, optional=True)
        if body.session_id is not None:
            await self.owned_snapshot(caller, body.session_id)
        token = secrets.token_urlsafe(32)
        granted = grant(caller, body.session_id, self.authenticator())
        await self.store.put_token(token, granted, TOKEN_SECONDS)
        answer = Token(token=token, expires_in=TOKEN_SECONDS)
        return JSONResponse(answer.model_dump(), status_code=201, headers=NO_STORE)

    # --- shared with the streams -------------------------------------------------------

    async def owned_snapshot(self, caller: Credential, session_id: str) -> dict[str, Any]:
        """The caller's stored session, or 404 (also for another caller's)."""
        principal = caller.principal
        snapshot = await self.store.get_session_state(session_id)
        if not owned(snapshot, principal.user_id, principal.org_id):
            raise not_found(session_id)
        assert snapshot is not None
        return snapshot

    async def session(self, caller: Credential, session_id: str) -> Session:
        """The caller's session, as the engine goes on with it (today's tags), or 404."""
        snapshot = await self.owned_snapshot(caller, session_id)
        return self.engine.restored(snapshot, self.resolve(caller.principal, snapshot["intent"]))

    async def settled(self, caller: Credential, session_id: str) -> Session:
        """`session`, once its snapshot has caught up with a move its stream already
        tells (the snapshot is written just after the event): an answer sent the moment
        the client saw `input_required` finds the session waiting, not working."""
        session = await self.session(caller, session_id)
        for _ in range(SETTLING_READS):
            if session.state not in RUNNING:
                return session
            after = await self.store.read(session_id, Stream.EVENTS, session.last_event, 10)
            if not any(
                event.data.get("type") == "state" and event.data.get("to") != "working"
                for event in after.events
            ):
                return session
            await anyio.sleep(0.02)
            session = await self.session(caller, session_id)
        return session

    async def view(self, caller: Credential, snapshot: dict[str, Any]) -> Any:
        context = self.resolve(caller.principal, snapshot.get("intent"))
        budgets = self.engine.restored(snapshot, context).budgets
        return await session_view(self.store, snapshot, budgets)

    def _go(self, session: Session, first: Go) -> None:
        """Run the session, which this engine has claimed, in the background."""
        assert self.tasks is not None, "the API serves only while the app runs"
        self.tasks.start_soon(self._run, session, first, name=f"session {session.id}")

    async def _run(self, session: Session, first: Go) -> None:
        try:
            result = await self.engine.run(session, first)
        except SessionTaken:
            return  # another replica's now: it goes on with it
        except Exception:
            logger.exception("session %s: its run failed", session.id)
            return
        logger.info("session %s: %s", session.id, result.state.value)


NO_STORE: Final = {"Cache-Control": "no-store"}


def grant(
    caller: Credential, session_id: str | None, authenticator: Authenticator
) -> dict[str, Any]:
    """What a WebSocket token stands for: the caller (never its secret: a digest of an
    API key; a JWT's id, expiry and the JWT settings it was checked under, to check it
    again when credentials change) and the session it opens, if one."""
    principal = caller.principal
    vouch: dict[str, Any] = {"kind": caller.kind, "label": caller.label}
    if caller.kind == "api_key":
        vouch["digest"] = key_digest(caller.secret)
    elif caller.kind == "jwt":
        vouch["expires_at"] = caller.expires_at
        vouch["jti"] = caller.token_id
        vouch["fingerprint"] = authenticator.jwt_fingerprint
    return {
        "user": principal.user_id,
        "org": principal.org_id,
        "roles": list(principal.roles),
        "session_id": session_id,
        "vouch": vouch,
        "minted": time.time(),
    }


def links(session_id: str) -> Links:
    return Links(
        self=f"/sessions/{session_id}",
        events=f"/events/{session_id}",
        ws=f"/ws/{session_id}",
        interact=f"/sessions/{session_id}/interact",
        cancel=f"/sessions/{session_id}/cancel",
    )


def _not_waiting(session: Session, exc: SessionNotWaiting) -> ApiError:
    if session.state in FINAL:
        return ApiError(409, "already_ended", f"the session has ended ({session.state.value})")
    if session.state in RUNNING:
        return ApiError(
            409,
            "session_working",
            "the session is working: it takes input only when it asks (input_required)",
        )
    return ApiError(409, "not_waiting", str(exc))


def _number(value: str | None, name: str, kind: type[Any], default: Any) -> Any:
    if value is None:
        return default
    try:
        number = kind(value)
    except ValueError:
        raise ApiError(400, "invalid_query", f"{name} must be a number") from None
    if kind is float and number != number:  # NaN
        raise ApiError(400, "invalid_query", f"{name} must be a number")
    return number
