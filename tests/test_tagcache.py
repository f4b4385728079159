"""The shared resolved-tags cache is emptied by every new tag config version."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from gateway.state import StateStore, open_store
from gateway.tagcache import invalidate_on_change
from gateway.tags import TagStore

ACME = """
tags:
  - tag: tool_crm
    kind: tool
    payload:
      config:
        assigned_users: ["*"]
        allowed_tools: [crm__get]
"""

pytestmark = pytest.mark.anyio


async def cached(state: StateStore, digest: str) -> bool:
    return await state.get_resolved_tags_cache("alice", "acme", None, digest) is not None


async def test_a_new_version_empties_the_cache(tags_dir: Callable[..., Path]) -> None:
    directory = tags_dir(acme=ACME)
    tags = TagStore.open(directory)
    async with open_store("memory://") as state, anyio.create_task_group() as tasks:
        await tasks.start(invalidate_on_change, tags, state)
        old = tags.current.digest
        await state.set_resolved_tags_cache("alice", "acme", None, old, {"tools": ["crm__get"]})
        await state.set_resolved_tags_cache("bob", "acme", "refund", old, {"tools": []})

        assert not tags.reload().changed  # no new version: the cache stays
        await anyio.sleep(0.05)
        assert await cached(state, old)

        (directory / "acme.yaml").write_text(ACME.replace("crm__get", "crm__list"))
        assert tags.reload().changed
        for _ in range(500):
            if not await state.debug_keys("TAGCACHE:*"):
                break
            await anyio.sleep(0.01)
        assert not await cached(state, old)
        tasks.cancel_scope.cancel()
