"""Argument scopes: checking a tool call's arguments against a tag's constraints.

The reasons are written for the person who has to act on them, for example
"amount 250 exceeds max 100 set by tag tool_refund_small".
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .. import jsoncodec
from ..linear_regex import LinearPattern
from .model import ArgumentConstraint, ToolScope

WILDCARD = "*"
_ABSENT = object()


@dataclass(frozen=True, slots=True)
class Violation:
    """One argument outside one tag's scope."""

    tag: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.message} set by tag {self.tag}"


def check_scope(tag: str, scope: ToolScope, arguments: Mapping[str, Any]) -> list[Violation]:
    """Every violation of `scope` by `arguments`; an empty list admits the call."""
    violations: list[Violation] = []
    for path, constraint in scope.items():
        parts = _parts(path)
        if WILDCARD in parts:
            found: Iterable[tuple[str, Any]] = _lookup(arguments, list(parts), "")
        else:
            found = (_lookup_plain(arguments, path, parts),)
        for concrete, value in found:
            message = _check(concrete, value, constraint)
            if message is not None:
                violations.append(Violation(tag, concrete, message))
    return violations


@lru_cache(maxsize=4096)
def _parts(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def _lookup_plain(
    arguments: Mapping[str, Any], path: str, parts: tuple[str, ...]
) -> tuple[str, Any]:
    """`_lookup` for a path without `*`, which addresses one place: the common case, and
    the one on every call's path, so done without generators."""
    value: Any = arguments
    for depth, head in enumerate(parts):
        if not isinstance(value, Mapping):
            return ".".join(parts[:depth]), _WrongShape(value, "an object")
        value = value.get(head, _ABSENT)
        if value is _ABSENT:
            return path, _ABSENT
    return path, value


def _lookup(value: Any, parts: list[str], prefix: str) -> Iterator[tuple[str, Any]]:
    """(concrete path, value or _ABSENT) for every place `parts` addresses.

    A container of the wrong shape on the way is reported as a value of its own, so that
    `payment.amount` cannot be sidestepped by sending `payment` as a list.
    """
    if not parts:
        yield prefix, value
        return
    head, rest = parts[0], parts[1:]
    if value is _ABSENT:
        yield _join(prefix, head, rest), _ABSENT
    elif head == WILDCARD:
        if isinstance(value, list):
            for index, item in enumerate(value):
                yield from _lookup(item, rest, f"{prefix}[{index}]")
        elif isinstance(value, Mapping):
            for key, item in value.items():
                yield from _lookup(item, rest, f"{prefix}.{key}" if prefix else str(key))
        else:
            yield prefix, _WrongShape(value, "an array or object")
    elif isinstance(value, Mapping):
        path = f"{prefix}.{head}" if prefix else head
        yield from _lookup(value.get(head, _ABSENT), rest, path)
    else:
        yield prefix, _WrongShape(value, "an object")


def _join(prefix: str, head: str, rest: list[str]) -> str:
    return ".".join(part for part in (prefix, head, *rest) if part)


@dataclass(frozen=True, slots=True)
class _WrongShape:
    value: Any
    expected: str


def _check(path: str, value: Any, rule: ArgumentConstraint) -> str | None:
    if isinstance(value, _WrongShape):
        return f"{path} must be {value.expected} (got {jsoncodec.type_name(value.value)})"
    if value is _ABSENT:
        if rule.required:
            return f"{path} is required"
        if rule.optional or not rule.has_value_checks:
            return None
        # The upstream may put a value of its own in its place, which nothing here checked.
        return (
            f"{path} is missing and the tool declares no default for it, "
            f"so it could escape {_bounds(rule)}"
        )
    if rule.forbidden:
        return f"{path} is not allowed"
    if rule.min is not None or rule.max is not None:
        if not _is_number(value):
            return f"{path} must be a number (got {_got(value)})"
        if not math.isfinite(value):
            return f"{path} {_show(value)} is not a finite number"
        if rule.max is not None and value > rule.max:
            return f"{path} {_show(value)} exceeds max {_show(rule.max)}"
        if rule.min is not None and value < rule.min:
            return f"{path} {_show(value)} is below min {_show(rule.min)}"
    if rule.max_length is not None:
        if isinstance(value, str):
            if len(value) > rule.max_length:
                return f"{path} is {len(value)} characters long, over max_length {rule.max_length}"
        elif isinstance(value, list):
            if len(value) > rule.max_length:
                return f"{path} has {len(value)} items, over max_length {rule.max_length}"
        else:
            return f"{path} must be text or an array (got {jsoncodec.type_name(value)})"
    if rule.pattern is not None:
        if not isinstance(value, str):
            return f"{path} must be text (got {_got(value)})"
        if not _compiled(rule.pattern).fullmatch(value):
            return f"{path} {_show(value)} does not match pattern {rule.pattern!r}"
    if rule.enum is not None and not any(_same(value, allowed) for allowed in rule.enum):
        choices = ", ".join(_show(allowed) for allowed in rule.enum)
        return f"{path} {_show(value)} is not one of {choices}"
    if rule.const is not None and not _same(value, rule.const):
        return f"{path} must be {_show(rule.const)} (got {_show(value)})"
    return None


def _bounds(rule: ArgumentConstraint) -> str:
    """The value checks of `rule`, named as a reader of the tag file knows them."""
    named: list[str] = []
    if rule.min is not None:
        named.append(f"min {_show(rule.min)}")
    if rule.max is not None:
        named.append(f"max {_show(rule.max)}")
    if rule.max_length is not None:
        named.append(f"max_length {rule.max_length}")
    if rule.pattern is not None:
        named.append(f"pattern {rule.pattern!r}")
    if rule.enum is not None:
        named.append("enum")
    if rule.const is not None:
        named.append(f"const {_show(rule.const)}")
    return ", ".join(named)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: numbers compare by value, but true is not 1 and "1" is not 1."""
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    return bool(a == b)


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> LinearPattern:
    """RE2: matching time linear in the argument, whatever the pattern, since the
    argument is the caller's (model.py refuses a pattern RE2 cannot compile)."""
    return LinearPattern(pattern)


def _got(value: Any) -> str:
    if value is None or isinstance(value, dict | list):
        return jsoncodec.type_name(value)
    return f"{jsoncodec.type_name(value)} {_show(value)}"


def _show(value: Any) -> str:
    if _is_number(value) and not isinstance(value, bool) and math.isfinite(value):
        return repr(value)
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
