"""A local fake of the Anthropic Messages API, for the real `anthropic` SDK to talk to: a
Starlette app on 127.0.0.1 that answers `POST /v1/messages` from a script (an envelope as
a `tool_use` block, a text-only answer, an error status with its headers, a slow answer)
and records every request it was sent."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.redis_server import free_port


@dataclass
class Reply:
    """How the fake answers one request."""

    envelope: dict[str, Any] | None = None
    """The emit_envelope tool use's input."""
    text: str | None = None
    """A text answer without any tool use."""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    usage: dict[str, int] = field(
        default_factory=lambda: {
            "input_tokens": 1200,
            "output_tokens": 80,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 0,
        }
    )


ERROR_TYPES = {429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


class FakeMessages:
    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.url = ""
        self.app = Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])

    async def _messages(self, request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if not self.replies:
            return _error(500, "api_error", "the fake's script is used up")
        reply = self.replies.pop(0)
        if reply.delay:
            await anyio.sleep(reply.delay)
        if reply.status != 200:
            error_type = ERROR_TYPES.get(reply.status, "api_error")
            return _error(reply.status, error_type, "scripted failure", reply.headers)
        content: list[dict[str, Any]] = []
        if reply.text is not None:
            content.append({"type": "text", "text": reply.text})
        if reply.envelope is not None:
            content.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_{secrets.token_hex(8)}",
                    "name": "emit_envelope",
                    "input": reply.envelope,
                }
            )
        return JSONResponse(
            {
                "id": f"msg_{secrets.token_hex(8)}",
                "type": "message",
                "role": "assistant",
                "model": body.get("model", "fake"),
                "content": content,
                "stop_reason": "tool_use" if reply.envelope is not None else "end_turn",
                "stop_sequence": None,
                "usage": reply.usage,
            },
            headers=reply.headers,
        )


def _error(
    status: int, error_type: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"type": "error", "error": {"type": error_type, "message": message}},
        status_code=status,
        headers=headers,
    )


@asynccontextmanager
async def fake_messages(replies: list[Reply]) -> AsyncIterator[FakeMessages]:
    """The fake, serving on a free loopback port until the block ends."""
    fake = FakeMessages(replies)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(fake.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    fake.url = f"http://127.0.0.1:{port}"
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:  # noqa: ASYNC110 (uvicorn sets a flag, no event)
                await anyio.sleep(0.01)
        try:
            yield fake
        finally:
            server.should_exit = True
