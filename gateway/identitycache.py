"""Values derived from objects kept elsewhere, cached by the objects' identity.

Listings and views are kept while they are current, and their tools' input schemas with
them; what a call needs to know of a schema (its `x-mcp-header` annotations) is the same
every time, and walking the schema per call is not free. Dicts cannot be hashed, so the
cache goes by `id()`, and keeps the object with its value: while it is cached its id
cannot pass to another object, so an id found is always the same object's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class IdentityCache(Generic[K, V]):
    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._kept: dict[int, tuple[K, V]] = {}

    def get(self, key: K, derive: Callable[[K], V]) -> V:
        """`derive(key)`, computed once per object while it stays cached."""
        kept = self._kept.get(id(key))
        if kept is not None:
            return kept[1]
        value = derive(key)
        if len(self._kept) >= self._limit:  # objects replaced many times over
            self._kept.clear()
        self._kept[id(key)] = (key, value)
        return value
