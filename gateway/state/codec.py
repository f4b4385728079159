"""The stored-value encoding: JSON inside a versioned envelope, `{"v": 1, "data": {...}}`.

A value written by another encoding version is upgraded when an upgrade is known, and
otherwise refused with an error naming the key and both versions: never misread.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import StateDecodeError, StateError
from .base import JsonObject

ENCODING_VERSION = 1

UPGRADES: dict[int, Callable[[JsonObject], JsonObject]] = {}
"""Version n → a function turning version n's data into version n+1's."""


def encode(value: Mapping[str, Any]) -> bytes:
    try:
        text = json.dumps(
            {"v": ENCODING_VERSION, "data": value},
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
    except (TypeError, ValueError) as exc:
        raise StateError(f"cannot store the value: it is not JSON ({exc})") from exc
    return text.encode()


def decode(raw: bytes | str, key: str) -> JsonObject:
    try:
        envelope = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise StateDecodeError(f"{key}: stored value is not JSON ({exc})") from exc
    if not isinstance(envelope, dict) or not isinstance(envelope.get("data"), dict):
        raise StateDecodeError(f"{key}: stored value is not a versioned envelope")
    version = envelope.get("v")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise StateDecodeError(f"{key}: stored value has no valid encoding version: {version!r}")
    if version > ENCODING_VERSION:
        raise StateDecodeError(
            f"{key}: stored with encoding version {version}, newer than this gateway reads "
            f"({ENCODING_VERSION}); a newer replica wrote it, so upgrade this one"
        )
    data: JsonObject = envelope["data"]
    while version < ENCODING_VERSION:
        upgrade = UPGRADES.get(version)
        if upgrade is None:
            raise StateDecodeError(
                f"{key}: stored with encoding version {version}, which this gateway "
                f"({ENCODING_VERSION}) no longer reads"
            )
        data, version = upgrade(data), version + 1
    return data
