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

PARSE_DEPTH: Final = 1024
"""How deep `loads` reads (orjson's own limit, which most bodies are parsed with)."""
MAX_VALUES: Final = 1_000_000
"""Values (every element and member) `unencodable` looks at before it finds there are too
many: no tool call needs as many, and it bounds the walk (about half a second at most),
also of a value an in-process caller built with shared parts, visited once per path."""

_LONG_NUMBER = re.compile(rb"\d{19,}")
"""A run of digits that may not fit in 64 bits (a shorter one always does)."""


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises ValueError when it is not JSON (RFC 8259, in valid Unicode)."""
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_NUMBER.search(raw):
        try:
            value = json.loads(raw, parse_constant=_not_json)
        except RecursionError:  # about where orjson stops too
            raise ValueError(f"nested more than {PARSE_DEPTH} levels deep") from None
        # As deep as orjson parses (the other road): depth is the reader's business.
        problem = unencodable(value, "the body", max_depth=PARSE_DEPTH)
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


def unencodable(value: Any, name: str = "", max_depth: int = MAX_DEPTH) -> str | None:
    """What in `value` JSON text cannot carry, and where (`name.a.0.b`-style paths): text
    that is not valid Unicode (a lone surrogate), in a value or a key; a number that is not
    finite; a key that is not text; a value of a type that is not JSON; nesting deeper
    than `max_depth`; more than MAX_VALUES values. None when all of it can be written.

    This runs for every call, so the walk is flat and pays only for what it must: a stack
    of the containers still to look into, each with its depth; scalars checked where they
    are found; the path built only once something is found (`_problem`)."""
    kind = type(value)
    if kind is not dict and kind is not list and kind is not tuple:
        return None if _fits_scalar(value) else _problem(value, name, max_depth)
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    budget = MAX_VALUES
    while stack:
        item, depth = pop()
        if depth > max_depth:
            break
        budget -= len(item)
        if budget < 0:  # no path to look for: it is the whole value
            return _too_many(name)
        if type(item) is dict:
            for key in item:
                if type(key) is not str or (not key.isascii() and not _is_unicode(key)):
                    return _problem(value, name, max_depth)
            children = item.values()
        else:
            children = item
        deeper = depth + 1
        for child in children:
            kind = type(child)
            if kind is str:
                if not child.isascii() and not _is_unicode(child):
                    return _problem(value, name, max_depth)
            elif kind is dict or kind is list or kind is tuple:
                push((child, deeper))
            elif kind is float:
                if not math.isfinite(child):
                    return _problem(value, name, max_depth)
            elif kind is not int and kind is not bool and child is not None:
                return _problem(value, name, max_depth)
    else:
        return None
    return _problem(value, name, max_depth)


def _too_many(name: str) -> str:
    return f"{_where((name,) if name else ())}: more than {MAX_VALUES:,} values"


def _fits_scalar(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return value.isascii() or _is_unicode(value)
    if kind is float:
        return math.isfinite(value)
    return kind is int or kind is bool or value is None


def _problem(value: Any, name: str, max_depth: int) -> str | None:
    """What `unencodable` found, with its path (the slow walk, which runs only once the
    quick one found something; depth first, so a value that contains itself ends at
    `max_depth`, and within the same budget of values)."""
    top = (name,) if name else ()
    stack: list[tuple[Any, tuple[str, ...]]] = [(value, top)]
    budget = MAX_VALUES
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict | list | tuple):
            if len(path) - len(top) >= max_depth:
                where = _where(path[: len(top) + 1])
                return f"{where}: nested more than {max_depth} levels deep"
            budget -= len(item)
            if budget < 0:
                return _too_many(name)
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
