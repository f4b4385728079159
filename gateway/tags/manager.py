"""TagManager: the Tag Manager's one public face for the rest of the gateway."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..principal import Principal
from .context import ResolvedContext
from .loader import TagSet
from .policy import Decision, check
from .resolve import Resolver
from .store import TagStore


class TagManager:
    """Resolution (cached) and the permission check, over a live TagStore."""

    def __init__(self, store: TagStore, cache_size: int = 50_000) -> None:
        self.store = store
        self.resolver = Resolver(lambda: store.current, max_entries=cache_size)

    @classmethod
    def open(
        cls, directory: Path, display_root: Path | None = None, cache_size: int = 50_000
    ) -> TagManager:
        return cls(TagStore.open(directory, display_root), cache_size)

    @property
    def tagset(self) -> TagSet:
        return self.store.current

    def resolve(self, principal: Principal, intent: str | None = None) -> ResolvedContext:
        return self.resolver.resolve(principal, intent)

    def check(
        self,
        principal: Principal,
        tool: str,
        arguments: Mapping[str, Any] | None = None,
        intent: str | None = None,
    ) -> Decision:
        return check(self.resolve(principal, intent), tool, arguments)
