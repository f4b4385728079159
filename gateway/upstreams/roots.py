"""Roots: the directories an upstream may work in, declared by the gateway, never by a
caller.

An upstream such as the npm `server-filesystem` replaces its allowed directories with the
client's roots, so a caller's roots would widen what it may touch. The gateway therefore
declares the roots capability only to an upstream configured with `roots:`, answers
`roots/list` (handshake era) and roots input requests (2026-07-28) with those, and never
passes a roots question to a caller nor a caller's roots answer to an upstream.
"""

from __future__ import annotations

from typing import Any

import mcp_types as types
from mcp import MCPError
from mcp.client.session import ClientRequestContext

from .config import UpstreamConfig

NOT_DECLARED = "the gateway declares no roots to this upstream (gateway.yaml: roots)"


def roots_result(config: UpstreamConfig) -> types.ListRootsResult:
    return types.ListRootsResult(
        roots=[
            types.Root(uri=uri, name=uri.rstrip("/").rsplit("/", 1)[-1] or "/")
            for uri in config.roots
        ]
    )


def roots_callback(config: UpstreamConfig) -> dict[str, Any]:
    """The SDK Client's `list_roots_callback` (which also declares the capability) for an
    upstream with configured roots; nothing for one without."""
    if not config.roots:
        return {}
    result = roots_result(config)

    async def list_roots(_context: ClientRequestContext) -> types.ListRootsResult:
        return result

    return {"list_roots_callback": list_roots}


def callers_responses(responses: types.InputResponses | None) -> types.InputResponses | None:
    """A caller's answers without any roots answer: the gateway never asks a caller for
    roots, so one is forged (and would widen the upstream's file access)."""
    if not responses:
        return responses
    kept: types.InputResponses = {
        k: v for k, v in responses.items() if not isinstance(v, types.ListRootsResult)
    }
    return kept or None


def answer_roots(
    config: UpstreamConfig, result: types.InputRequiredResult
) -> types.InputResponses | None:
    """The gateway's own answers to the roots questions of an upstream's
    InputRequiredResult (None when it asks none). Raises MCPError when it asks for roots
    that are not configured, as the SDK client answers `roots/list` then."""
    keys = [
        k for k, v in (result.input_requests or {}).items() if isinstance(v, types.ListRootsRequest)
    ]
    if not keys:
        return None
    if not config.roots:
        raise MCPError(types.INVALID_REQUEST, f"List roots not supported: {NOT_DECLARED}")
    answer = roots_result(config)
    return dict.fromkeys(keys, answer)


def without_roots(result: types.InputRequiredResult) -> types.InputRequiredResult:
    """`result` as a caller may see it: no roots questions."""
    requests = {
        k: v
        for k, v in (result.input_requests or {}).items()
        if not isinstance(v, types.ListRootsRequest)
    }
    return result.model_copy(update={"input_requests": requests or None})
