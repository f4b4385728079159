"""Keeping the shared resolved-tags cache honest across tag config changes.

Every entry carries the digest of the config it was resolved under, and a read with
another digest misses, so no replica ever serves permissions from an older config. On
top of that, every new version empties the cache, so that stale entries do not sit in
Redis until their TTL runs out.
"""

from __future__ import annotations

import contextlib
import logging

import anyio
from anyio.abc import TaskStatus

from .state import StateError, StateStore
from .tags.loader import TagSet
from .tags.store import TagStore

logger = logging.getLogger("gateway.tags")


async def invalidate_on_change(
    tags: TagStore,
    state: StateStore,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run until cancelled, emptying the cache after every new tag config version.
    Started (for `TaskGroup.start`) once it is subscribed."""
    # One pending version is enough: a clearing covers every change before it.
    send, receive = anyio.create_memory_object_stream[int](1)

    def changed(_old: TagSet, new: TagSet) -> None:
        with contextlib.suppress(anyio.WouldBlock):
            send.send_nowait(new.version)

    unsubscribe = tags.subscribe(changed)
    task_status.started()
    try:
        async with receive:
            async for version in receive:
                try:
                    removed = await state.invalidate_tags_cache()
                except StateError as exc:
                    # Entries of older versions still miss, by their digest.
                    logger.warning("tag cache not emptied for version %d: %s", version, exc)
                    continue
                logger.info("tag config version %d: %d cached contexts dropped", version, removed)
    finally:
        unsubscribe()
        send.close()
