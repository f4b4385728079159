"""IdentityCache: a value per object, by identity, never mistaken for another object's."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from gateway.identitycache import IdentityCache


def test_a_value_is_derived_once_per_object_not_per_equal_content() -> None:
    derived: list[int] = []

    def derive(schema: dict[str, Any]) -> int:
        derived.append(id(schema))
        return len(schema)

    cache: IdentityCache[dict[str, Any], int] = IdentityCache()
    first, twin = {"type": "object"}, {"type": "object"}
    assert cache.get(first, derive) == 1
    assert cache.get(first, derive) == 1
    assert cache.get(twin, derive) == 1
    assert derived == [id(first), id(twin)]


def test_a_cached_object_is_kept_so_that_its_id_stays_its_own() -> None:
    class Schema:
        pass

    cache: IdentityCache[Schema, str] = IdentityCache()
    schema = Schema()
    alive = weakref.ref(schema)
    cache.get(schema, lambda _schema: "derived")
    del schema
    gc.collect()
    assert alive() is not None  # its id cannot go to a new object while it is cached


def test_past_its_limit_the_cache_starts_over() -> None:
    derived: list[int] = []

    def derive(schema: dict[str, Any]) -> int:
        derived.append(schema["n"])
        return int(schema["n"])

    cache: IdentityCache[dict[str, Any], int] = IdentityCache(limit=2)
    kept = [{"n": n} for n in range(3)]
    for schema in kept:
        cache.get(schema, derive)
    cache.get(kept[2], derive)  # kept after the start-over
    cache.get(kept[0], derive)  # gone with it
    assert derived == [0, 1, 2, 0]
