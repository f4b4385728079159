"""Tool-name patterns: exact names and shell-style globs (`crm__*`, `*__delete_*`)."""

from __future__ import annotations

import fnmatch
import functools
import re
from dataclasses import dataclass

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class _Chars:
    """One character position of a glob: a literal, `?`, or a `[...]` set as code-point ranges."""

    ranges: tuple[tuple[int, int], ...] = ()
    negated: bool = False

    @classmethod
    def literal(cls, char: str) -> _Chars:
        return cls(((ord(char), ord(char)),))

    def __contains__(self, code: int) -> bool:
        inside = any(low <= code <= high for low, high in self.ranges)
        return inside != self.negated

    @property
    def admits_any(self) -> bool:
        """False for a set of reversed ranges only (`[c-a]`), which fnmatch never matches."""
        return self.negated or bool(self.ranges)

    def intersects(self, other: _Chars) -> bool:
        if self.negated and other.negated:
            return True  # two finite exclusions leave most of Unicode to share
        if self.negated:
            return other.intersects(self)
        # The first code point of a range of ours that `other` admits is the range's start,
        # the start of one of other's ranges, or the point just past one (if it is negated).
        edges = [edge for start, end in other.ranges for edge in (start, end + 1)]
        for low, high in self.ranges:
            candidates = [low, *edges]
            if any(low <= code <= high and code in other for code in candidates):
                return True
        return False


_ANY = _Chars(negated=True)
_STAR = None
"""A glob token: `None` for `*`, else the characters one position admits."""


@functools.lru_cache(maxsize=4096)
def _tokens(pattern: str) -> tuple[_Chars | None, ...]:
    """Parse a glob as `fnmatch` reads it (`[!...]` negates, a leading `]` is literal,
    an unclosed `[` is a literal bracket)."""
    tokens: list[_Chars | None] = []
    index, size = 0, len(pattern)
    while index < size:
        char = pattern[index]
        index += 1
        if char == "*":
            if not tokens or tokens[-1] is not _STAR:
                tokens.append(_STAR)
        elif char == "?":
            tokens.append(_ANY)
        elif char == "[":
            end = index
            if end < size and pattern[end] == "!":
                end += 1
            if end < size and pattern[end] == "]":
                end += 1
            end = pattern.find("]", end)
            if end < 0:
                tokens.append(_Chars.literal("["))
                continue
            body, index = pattern[index:end], end + 1
            negated = body.startswith("!")
            body = body[1:] if negated else body
            ranges: list[tuple[int, int]] = []
            position = 0
            while position < len(body):
                if position + 2 < len(body) and body[position + 1] == "-":
                    low, high = ord(body[position]), ord(body[position + 2])
                    if low <= high:
                        ranges.append((low, high))
                    position += 3
                else:
                    code = ord(body[position])
                    ranges.append((code, code))
                    position += 1
            tokens.append(_Chars(tuple(ranges), negated))
        else:
            tokens.append(_Chars.literal(char))
    return tuple(tokens)


@dataclass(frozen=True, slots=True)
class ToolGlob:
    """A compiled pattern. Matching is case-sensitive, as tool names are."""

    pattern: str
    regex: re.Pattern[str] | None

    @staticmethod
    def compile(pattern: str) -> ToolGlob:
        return _compile(pattern)

    @property
    def is_exact(self) -> bool:
        return self.regex is None

    def matches(self, name: str) -> bool:
        if self.regex is None:
            return name == self.pattern
        return self.regex.match(name) is not None

    def overlaps(self, other: ToolGlob) -> bool:
        """Whether some name matches both patterns (exact, not a heuristic)."""
        if self.is_exact:
            return other.matches(self.pattern)
        if other.is_exact:
            return self.matches(other.pattern)
        return _overlap(self.pattern, other.pattern)


@functools.lru_cache(maxsize=16384)
def _compile(pattern: str) -> ToolGlob:
    """Cached: the same few patterns recur across every org's tags, and a reload compiles
    them all again. Bounded, so a stream of edited patterns cannot grow it forever."""
    if _GLOB_CHARS.isdisjoint(pattern):
        return ToolGlob(pattern, None)
    return ToolGlob(pattern, re.compile(fnmatch.translate(pattern)))


@functools.lru_cache(maxsize=16384)
def _overlap(left: str, right: str) -> bool:
    return _intersect(_tokens(left), _tokens(right))


def _intersect(left: tuple[_Chars | None, ...], right: tuple[_Chars | None, ...]) -> bool:
    """Whether two globs' languages share a word: a search over pairs of positions, where
    a `*` may be skipped or may take a character while staying put."""
    seen: set[tuple[int, int]] = set()
    stack = [(0, 0)]
    while stack:
        state = stack.pop()
        if state in seen:
            continue
        seen.add(state)
        i, j = state
        left_done, right_done = i == len(left), j == len(right)
        if left_done and right_done:
            return True
        a = None if left_done else left[i]
        b = None if right_done else right[j]
        if not left_done and a is _STAR:
            stack.append((i + 1, j))
        if not right_done and b is _STAR:
            stack.append((i, j + 1))
        if left_done or right_done:
            continue  # one side is done and the other still needs a character
        if a is None:
            admits = b is None or b.admits_any
        elif b is None:
            admits = a.admits_any
        else:
            admits = a.intersects(b)
        if admits:
            stack.append((i if a is None else i + 1, j if b is None else j + 1))
    return False
