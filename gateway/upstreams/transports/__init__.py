"""How the gateway reaches an upstream: one UpstreamTransport per upstream, chosen once
from its config. A stdio child, streamable HTTP (whose 2026-07-28 tool calls may go as
hand-built exchanges), legacy HTTP+SSE, or a server object in this process."""

from __future__ import annotations

from ..config import HttpUpstream, InProcessUpstream, StdioUpstream, UpstreamConfig
from .base import CLIENT_INFO, UpstreamTransport
from .http import SseTransport, StreamableHttpTransport, expanded_headers
from .inprocess import InProcessTransport
from .stdio import StdioTransport

__all__ = [
    "CLIENT_INFO",
    "InProcessTransport",
    "SseTransport",
    "StdioTransport",
    "StreamableHttpTransport",
    "UpstreamTransport",
    "expanded_headers",
    "transport_for",
]


def transport_for(name: str, config: UpstreamConfig) -> UpstreamTransport:
    """The transport upstream `name` is reached over, by its config."""
    if isinstance(config, StdioUpstream):
        return StdioTransport(name, config)
    if isinstance(config, InProcessUpstream):
        return InProcessTransport(name, config)
    if isinstance(config, HttpUpstream) and config.transport == "sse":
        return SseTransport(name, config)
    return StreamableHttpTransport(name, config)
