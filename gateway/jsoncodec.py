"""JSON on the hot path: orjson, except where it would change a value.

orjson is several times faster than the standard library, but it reads an integer beyond
64 bits as a float (rounding it) and refuses to write one. JSON-RPC carries whatever
numbers a tool takes, so a body with such a number goes through `json`, which keeps
every integer exact.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_LONG_NUMBER = re.compile(rb"\d{19,}")
"""A run of digits that may not fit in 64 bits (a shorter one always does)."""


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises ValueError when it is not JSON."""
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_NUMBER.search(raw):
        return json.loads(raw)
    return orjson.loads(raw)


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact JSON bytes (UTF-8, not ASCII-escaped)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except orjson.JSONEncodeError:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys)
        return text.encode()
