"""JSON on the hot path: orjson, except where it would change a value.

orjson is several times faster than the standard library, but it reads an integer beyond
64 bits as a float (rounding it) and refuses to write one. JSON-RPC carries whatever
numbers a tool takes, so a body with such a number goes through `json`, which keeps
every integer exact.

Reading is strict on both roads, as orjson is: `NaN`, `Infinity` and `-Infinity` are not
JSON (RFC 8259 §6), and a `\\ud800` escape without its pair is text no encoder can write
back (UTF-8 has no lone surrogates; RFC 8259 §8.2, RFC 7493 §2.1). Accepted, either would
reach an upstream leg as a value the gateway cannot send: a lone surrogate made the SDK's
writer fail and took the upstream's shared session down with it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

import orjson

MAX_DEPTH: Final = 100
"""Levels of nesting (the value itself is one) beyond which `unencodable` finds a value
cannot be written: no tool needs more, the SDK client's writer gives up at about 250
(in a call, as an internal error), the standard library's at about 1,000 (RecursionError),
and a value that contains itself (an in-process caller's) is deep without end."""

_LONG_NUMBER = re.compile(rb"\d{19,}")
"""A run of digits that may not fit in 64 bits (a shorter one always does)."""


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises ValueError when it is not JSON (RFC 8259, in valid Unicode)."""
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_NUMBER.search(raw):
        value = json.loads(raw, parse_constant=_not_json)
        problem = unencodable(value, "the body")
        if problem is not None:
            raise ValueError(problem)
        return value
    return orjson.loads(raw)


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact JSON bytes (UTF-8, not ASCII-escaped)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except orjson.JSONEncodeError:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys)
        return text.encode()


def unencodable(value: Any, name: str = "") -> str | None:
    """What in `value` JSON text cannot carry, and where (`name.a.0.b`-style paths): text
    that is not valid Unicode (a lone surrogate), in a value or a key; a number that is not
    finite; a key that is not text; a value of a type that is not JSON; nesting deeper
    than MAX_DEPTH. None when all of it can be written. Iterative, so nesting costs no
    recursion; the path is looked for only once something is found, and the depth only
    for a value of more than MAX_DEPTH containers (this runs for every call)."""
    stack = [value]
    pop, extend = stack.pop, stack.extend
    containers = 0
    while stack:
        item = pop()
        kind = type(item)
        if kind is str:
            if not item.isascii() and not _is_unicode(item):
                break
        elif kind is dict:
            containers += 1
            if containers > MAX_DEPTH:  # it may be too deep: the walk that knows depths
                break
            for key in item:
                if type(key) is not str or (not key.isascii() and not _is_unicode(key)):
                    return _problem(value, name)
            extend(item.values())
        elif kind is list or kind is tuple:
            containers += 1
            if containers > MAX_DEPTH:
                break
            extend(item)
        elif kind is float:
            if not math.isfinite(item):
                break
        elif kind is not int and kind is not bool and item is not None:
            break
    else:
        return None
    return _problem(value, name)


def _problem(value: Any, name: str) -> str | None:
    """What `unencodable` found, with its path (the slow walk; depth first, so a value
    that contains itself ends at MAX_DEPTH)."""
    top = (name,) if name else ()
    stack: list[tuple[Any, tuple[str, ...]]] = [(value, top)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict | list | tuple) and len(path) - len(top) >= MAX_DEPTH:
            return f"{_where(path[: len(top) + 1])}: nested more than {MAX_DEPTH} levels deep"
        if isinstance(item, str):
            if not _is_unicode(item):
                return f"{_where(path)}: text that is not valid Unicode (a lone surrogate)"
        elif isinstance(item, bool | int) or item is None:
            pass
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{_where(path)}: {item!r} is not a JSON number"
        elif isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str):
                    return f"{_where(path)}: a key that is not text ({type(key).__name__})"
                if not _is_unicode(key):
                    where = _where((*path, key))
                    return f"{where}: a key that is not valid Unicode (a lone surrogate)"
                stack.append((inner, (*path, key)))
        elif isinstance(item, list | tuple):
            stack.extend((inner, (*path, str(index))) for index, inner in enumerate(item))
        else:
            return f"{_where(path)}: a {type(item).__name__}, which is not a JSON value"
    return None


def _is_unicode(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _where(path: tuple[str, ...]) -> str:
    return ".".join(_printable(part) for part in path) if path else "the value"


def _printable(part: str) -> str:
    """A path part as it can be shown (and logged): a lone surrogate escaped."""
    return part.encode("utf-8", "backslashreplace").decode()


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value (RFC 8259)")


def type_name(value: Any) -> str:
    """A JSON value's type as an error message names it: "null", "a boolean", "a number",
    "text", "an array", "an object"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
