"""TagManager: the Tag Manager's one public face for the rest of the gateway."""

from __future__ import annotations

from pathlib import Path

from ..principal import Principal
from .context import ResolvedContext
from .loader import TagSet
from .resolve import Resolver
from .store import TagStore


class TagManager:
    """Resolution (cached) over a live TagStore. The permission check is not here: it is
    `policy.check` of a resolved context, the one check every door goes through."""

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
