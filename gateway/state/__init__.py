"""Session-scoped state shared by replicas: `open_store(url)` picks the backend."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import InvalidStreamId, StateDecodeError, StateError, StateUnavailable
from .base import (
    DEFAULT_STREAM_MAX_LEN,
    START,
    JsonObject,
    StateStore,
    Stream,
    StreamBatch,
    StreamEvent,
    StreamGap,
    TTLs,
)

__all__ = [
    "DEFAULT_STREAM_MAX_LEN",
    "START",
    "InvalidStreamId",
    "JsonObject",
    "StateDecodeError",
    "StateError",
    "StateStore",
    "StateUnavailable",
    "Stream",
    "StreamBatch",
    "StreamEvent",
    "StreamGap",
    "TTLs",
    "open_store",
]


def open_store(
    url: str, ttls: TTLs | None = None, stream_max_len: int = DEFAULT_STREAM_MAX_LEN
) -> StateStore:
    """The store for `url` (not yet started: use `async with`). Raises ValueError for a
    URL no backend takes."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore(ttls or TTLs(), stream_max_len)
    if scheme in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        from .redis import RedisStore

        return RedisStore(url, ttls or TTLs(), stream_max_len)
    raise ValueError(
        f"state URL {url!r}: expected memory://, redis://host:port/db, rediss://... "
        "or redis+cluster://host:port"
    )
