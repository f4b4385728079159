"""The session API's routes, served by the gateway's Starlette app beside /mcp.

    POST /sessions                         start a session            (sessions.py)
    GET  /sessions                         the caller's sessions
    GET  /sessions/{id}                    one session
    POST /sessions/{id}/interact           answer its question
    POST /sessions/{id}/approvals/{a}      decide its approval
    POST /sessions/{id}/cancel             cancel it
    POST /tokens                           a WebSocket's single-use token
    GET  /events/{id}                      its events, as SSE           (streams.py)
    WS   /ws, /ws/{id}                     the same events, and the caller's word
    GET  /healthz, /readyz, /metrics, /openapi.json
    GET  /, /ui/*, /widget.js              the web page and the widget (ui/)

Every request is counted by route template and status (metrics.py).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from ..errors import ApiError, StateUnavailable
from ..metrics import Metrics
from ..state.base import StateStore
from ..upstreams.pool import Pool
from .hosts import listed
from .openapi import document
from .sessions import SessionApi
from .streams import Streams

UI: Final = Path(__file__).parent / "ui"
UNCHECKED_HOST: Final = frozenset({"/healthz", "/readyz", "/metrics"})
Handler = Callable[[Request], Awaitable[Response]]


def api_routes(
    api: SessionApi,
    streams: Streams,
    metrics: Metrics,
    state: StateStore,
    pool: Pool,
    hosts: tuple[str, ...],
) -> list[BaseRoute]:
    """`hosts`: the Host headers answered (server.allowed_hosts; 421 otherwise, as /mcp)."""

    def timed(template: str, handler: Handler) -> Handler:
        # Probes and scrapers come by address, not by name, and read nothing of a caller's.
        checked = template not in UNCHECKED_HOST

        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            status = 500
            try:
                if checked and not listed(request.headers.get("host", ""), hosts):
                    raise ApiError(421, "misdirected", "this gateway does not answer that Host")
                response = await handler(request)
                status = response.status_code
                return response
            except ApiError as exc:
                status = exc.status
                raise
            except StateUnavailable:
                status = 503  # the app's handler answers it so
                raise
            finally:
                metrics.observe_request(
                    template, request.method, status, time.perf_counter() - started
                )

        return endpoint

    spec = document()

    async def openapi(_request: Request) -> Response:
        return JSONResponse(spec)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        status = await state.probe()
        upstreams = Counter(s.reported.value for s in pool.statuses().values())
        body: dict[str, Any] = {
            "ready": status.ready,
            "state": {"ready": status.ready, "reason": status.reason},
            "upstreams": dict(sorted(upstreams.items())),
        }
        if status.ready:
            return JSONResponse(body)
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})

    async def exposition(_request: Request) -> Response:
        text, kind = metrics.render()
        return Response(text, media_type=kind)

    async def page(_request: Request) -> Response:
        return FileResponse(UI / "index.html", headers={"Cache-Control": "no-cache"})

    async def widget(_request: Request) -> Response:
        return FileResponse(
            UI / "widget.js",
            media_type="text/javascript",
            headers={"Cache-Control": "no-cache", "Access-Control-Allow-Origin": "*"},
        )

    plain: list[tuple[str, Handler, list[str]]] = [
        ("/sessions", _by_method({"POST": api.create, "GET": api.listing}), ["GET", "POST"]),
        ("/sessions/{session_id}", api.show, ["GET"]),
        ("/sessions/{session_id}/interact", api.interact, ["POST"]),
        ("/sessions/{session_id}/approvals/{approval}", api.decide, ["POST"]),
        ("/sessions/{session_id}/cancel", api.cancel, ["POST"]),
        ("/tokens", api.token, ["POST"]),
        ("/events/{session_id}", streams.sse, ["GET"]),
        ("/healthz", healthz, ["GET"]),
        ("/readyz", readyz, ["GET"]),
        ("/metrics", exposition, ["GET"]),
        ("/openapi.json", openapi, ["GET"]),
        ("/", page, ["GET"]),
        ("/widget.js", widget, ["GET"]),
    ]
    routes: list[BaseRoute] = [
        Route(path, timed(path, handler), methods=methods) for path, handler, methods in plain
    ]
    routes += [
        WebSocketRoute("/ws", streams.websocket),
        WebSocketRoute("/ws/{session_id}", streams.websocket),
        Mount("/ui", app=StaticFiles(directory=UI), name="ui"),
    ]
    return routes


def _by_method(handlers: dict[str, Handler]) -> Handler:
    async def endpoint(request: Request) -> Response:
        return await handlers.get(request.method, handlers["GET"])(request)

    return endpoint
