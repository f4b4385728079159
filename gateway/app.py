"""The Starlette app and the lifespan that wires the gateway's parts together.

What it serves: `/mcp` (the gateway as an MCP server, see gateway.front), `/health` (the
process is up) and `/ready` (it can serve: the state store is reachable; 503 with the
reason otherwise), and the session API (gateway/api/routes.py): REST, SSE and WebSocket
sessions, /metrics, /openapi.json, the web page and the widget.

The parts come from the runtime (runtime.py), which starts them: every upstream is
connected in parallel before the app serves, and two upstreams offering the same public
name or resource URI stop it.

gateway.yaml is watched: a change to its `auth:` section (a key added or revoked) takes
effect within a second, ending open requests of revoked credentials; an invalid edit is
logged and the last good settings stay. Other sections need a restart.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from . import __version__, sdk_internals
from .api.bodies import problem, refused
from .api.notify import Notifier
from .api.redaction import redact_access_log
from .api.routes import api_routes
from .api.sessions import SessionApi
from .api.streams import Streams
from .api.webhooks import Webhooks
from .auth import Authenticator
from .errors import ApiError, CannotStart, ConfigError
from .front.http import McpEndpoint
from .front.modern_calls import Listings, ModernCalls
from .front.server import Front
from .front.session_calls import SessionCalls
from .front.session_transport import GatewaySessionManager
from .live import OpenRequests
from .metrics import Metrics
from .runtime import Runtime
from .settings import load_config
from .state import StateUnavailable
from .watching import file_changes

logger = logging.getLogger("gateway")

ROUTES_SERVED = ("/mcp", "/health", "/ready")


async def http_error(_request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, a method it does not allow) as the API's
    JSON problems."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
    return problem(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def state_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    """Any route that needs the state store while it is away answers 503, saying when to
    come back; the URL and reason are for operators (`/ready`), not for callers."""
    if not isinstance(exc, StateUnavailable):  # registered for that type only
        raise exc
    return JSONResponse(
        {"error": "state store unavailable; retry later"},
        status_code=503,
        headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))},
    )


class GatewayApp(Starlette):
    """The gateway's ASGI app. Requests to /mcp go straight to its endpoint, which answers
    every method and error itself: the router and middleware layers in between cost a
    proxied call more CPU than the gateway's own checks."""

    def __init__(self, mcp: McpEndpoint, **options: Any) -> None:
        super().__init__(**options)
        self.mcp = mcp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/mcp":
            scope["app"] = self
            await self.mcp.serve(scope, receive, send)
            return
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await super().__call__(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """The ASGI lifespan protocol as Starlette's router speaks it, except that a refusal
        to start (CannotStart) is one message for the server to log, not the traceback of
        an ExceptionGroup: it is the operator's configuration, not a bug."""
        started = False
        await receive()  # lifespan.startup
        try:
            async with self.router.lifespan_context(self):
                await send({"type": "lifespan.startup.complete"})
                started = True
                await receive()  # lifespan.shutdown
        except BaseException as exc:
            if isinstance(exc, CannotStart) and not started:
                message = f"gateway cannot start: {exc}"
                await send({"type": "lifespan.startup.failed", "message": message})
                return
            failed = "lifespan.shutdown.failed" if started else "lifespan.startup.failed"
            await send({"type": failed, "message": traceback.format_exc()})
            raise
        await send({"type": "lifespan.shutdown.complete"})


def build_app(runtime: Runtime) -> Starlette:
    sdk_internals.check()  # before anything starts: a changed SDK is refused in one message
    redact_access_log()
    config, tags, state, pool = runtime.config, runtime.tags, runtime.state, runtime.pool
    settings = config.settings
    authenticator = Authenticator(settings.auth, config.path.parent, str(config.path))
    front = Front(runtime, __version__)
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(settings.server.allowed_hosts),
        allowed_origins=list(settings.server.allowed_origins),
    )
    manager = GatewaySessionManager(
        state,
        app=front.server,
        security_settings=security,
        session_idle_timeout=settings.server.session_idle_timeout,
        max_sessions=settings.server.max_sessions,
    )
    calls = session_calls = None
    if settings.server.direct_calls:
        listings = Listings()
        calls = ModernCalls(front, listings)
        session_calls = SessionCalls(front, manager, security, listings)
    endpoint = McpEndpoint(manager, lambda: authenticator, calls, session_calls, security)
    metrics = Metrics()
    runtime.service.on_outcome(metrics.record_call)
    runtime.engine.recorder.on_event(metrics.record_event)
    endpoint.on_request(metrics.record_mcp)
    webhooks = Webhooks(settings.api.webhooks, display=str(config.path))
    notifier = Notifier(webhooks)
    runtime.engine.recorder.on_event(notifier.on_event)
    api = SessionApi(runtime.engine, tags.resolve, lambda: authenticator, webhooks)
    streams_open = OpenRequests("session streams")
    server = settings.server
    streams = Streams(api, settings.api, server.allowed_hosts, server.allowed_origins, streams_open)

    async def follow_auth() -> None:
        """Apply edits of gateway.yaml's `auth:` section (see the module docstring)."""
        nonlocal authenticator
        path = config.path
        async for _ in file_changes(path, 100):
            try:
                fresh = load_config(path).settings.auth
                if fresh == authenticator.settings:
                    continue
                replacement = Authenticator(fresh, path.parent, str(path))
            except ConfigError as exc:
                logger.error("gateway.yaml change not applied; the last good auth stays: %s", exc)
                continue
            authenticator = replacement
            logger.info("auth settings reloaded from %s", path)
            endpoint.recheck(replacement)
            streams_open.recheck(replacement)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with runtime.running() as tasks, front.running():
            api.tasks = tasks
            tasks.start_soon(follow_auth)
            tasks.start_soon(notifier.run)
            if not authenticator.enabled:
                logger.warning("no API keys or JWT configured: every /mcp request gets 401")
            async with manager.run():
                try:
                    yield
                finally:
                    # What the shutdown cancels now is not the callers' doing: sessions
                    # under way are left to resume (after a restart, or elsewhere), and this
                    # process takes none up again on its way out.
                    runtime.stop_sessions()
                    with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                        await webhooks.aclose()

    async def health(_request: Request) -> JSONResponse:
        # No tag names or counts here: /health is unauthenticated.
        # Nor upstream names: how many are in each state.
        upstreams = Counter(status.reported.value for status in pool.statuses().values())
        return JSONResponse(
            {
                "status": "ok",
                "tags": {
                    "version": tags.tagset.version,
                    "last_reload_failed": tags.store.last_error is not None,
                },
                "upstreams": dict(sorted(upstreams.items())),
            }
        )

    async def ready(_request: Request) -> JSONResponse:
        status = await state.probe()
        body = {"ready": status.ready, "state": {"url": status.url, "reason": status.reason}}
        if status.ready:
            return JSONResponse(body)
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})

    app = GatewayApp(
        endpoint,
        routes=[
            Route("/mcp", endpoint, methods=["GET", "POST", "DELETE"]),
            Route("/health", health),
            Route("/ready", ready),
            *api_routes(api, streams, metrics, state, pool, server.allowed_hosts),
        ],
        lifespan=lifespan,
        exception_handlers={
            StateUnavailable: state_unavailable,
            ApiError: refused,
            HTTPException: http_error,
        },
    )
    # /sessions/ is no route: a redirect to /sessions would be made before any check of
    # the request's Host, to whatever Host it named.
    app.router.redirect_slashes = False
    app.state.runtime = runtime
    app.state.tags = tags
    app.state.store = state
    app.state.config = config
    app.state.pool = pool
    app.state.front = front
    app.state.mcp = endpoint
    app.state.api = api
    app.state.metrics = metrics
    return app
