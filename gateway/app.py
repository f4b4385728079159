"""The Starlette app and the lifespan that wires the gateway's parts together.

What it serves today: `/health` (the process is up) and `/ready` (it can serve: the state
store is reachable; 503 with the reason otherwise). The MCP endpoint (`/mcp`) and the
session API are built on this app by later work.

Start-up connects every upstream in parallel and waits until each has made its first
attempt (each bounded by its own init_timeout). An upstream that is down does not stop the
gateway; two upstreams producing the same public name or resource URI do, naming both.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .errors import ConfigError, ConfigIssue
from .settings import GatewayConfig
from .state import StateStore, StateUnavailable
from .tagcache import invalidate_on_change
from .tags import TagManager
from .upstreams.pool import Pool

logger = logging.getLogger("gateway")

ROUTES_SERVED = ("/health", "/ready")


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


def build_app(
    config: GatewayConfig, tags: TagManager, state: StateStore, pool: Pool | None = None
) -> Starlette:
    pool = pool or Pool({})

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # The store never fails to start: without its server it reports not ready and
        # keeps connecting, while tag listing and checks go on from the config files.
        async with state, anyio.create_task_group() as tasks:
            await tasks.start(invalidate_on_change, tags.store, state)
            if config.settings.tags.watch:
                tasks.start_soon(tags.store.watch)
            tasks.start_soon(pool.run)
            await pool.settled()
            clashes = pool.catalog.clashes
            if clashes:
                tasks.cancel_scope.cancel()
                error = ConfigError(
                    ConfigIssue(str(config.path), clash, field="upstreams") for clash in clashes
                )
                logger.error("cannot start: %s", error)
                raise error
            for name, status in pool.statuses().items():
                if status.error:
                    logger.warning("upstream %s is %s: %s", name, status.state, status.error)
            yield
            tasks.cancel_scope.cancel()

    async def health(_request: Request) -> JSONResponse:
        # No tag names or counts here: /health is unauthenticated.
        # Nor upstream names: how many are in each state.
        upstreams = Counter(status.state.value for status in pool.statuses().values())
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
        status = state.status()
        body = {"ready": status.ready, "state": {"url": status.url, "reason": status.reason}}
        if status.ready:
            return JSONResponse(body)
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})

    app = Starlette(
        routes=[Route("/health", health), Route("/ready", ready)],
        lifespan=lifespan,
        exception_handlers={StateUnavailable: state_unavailable},
    )
    app.state.tags = tags
    app.state.store = state
    app.state.config = config
    app.state.pool = pool
    return app
