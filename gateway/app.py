"""The Starlette app and the lifespan that wires the gateway's parts together.

What it serves today: `/health`. The MCP endpoint (`/mcp`) and the session API are built
on this app by later work; until then the process loads, validates and watches the tag
configuration, and says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .settings import GatewayConfig
from .tags import TagManager

ROUTES_SERVED = ("/health",)


def build_app(config: GatewayConfig, tags: TagManager) -> Starlette:
    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            if config.settings.tags.watch:
                tasks.start_soon(tags.store.watch)
            yield
            tasks.cancel_scope.cancel()

    async def health(_request: Request) -> JSONResponse:
        # No tag names or counts here: /health is unauthenticated.
        return JSONResponse(
            {
                "status": "ok",
                "tags": {
                    "version": tags.tagset.version,
                    "last_reload_failed": tags.store.last_error is not None,
                },
            }
        )

    app = Starlette(routes=[Route("/health", health)], lifespan=lifespan)
    app.state.tags = tags
    app.state.config = config
    return app
