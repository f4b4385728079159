"""Tool-name patterns: exact names and shell-style globs (`crm__*`, `*__delete_*`)."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class ToolGlob:
    """A compiled pattern. Matching is case-sensitive, as tool names are."""

    pattern: str
    regex: re.Pattern[str] | None

    @classmethod
    def compile(cls, pattern: str) -> ToolGlob:
        if _GLOB_CHARS.isdisjoint(pattern):
            return cls(pattern, None)
        return cls(pattern, re.compile(fnmatch.translate(pattern)))

    @property
    def is_exact(self) -> bool:
        return self.regex is None

    def matches(self, name: str) -> bool:
        if self.regex is None:
            return name == self.pattern
        return self.regex.match(name) is not None

    def overlaps(self, other: ToolGlob) -> bool:
        """Whether some name could match both; exact where one side is a plain name."""
        if self.is_exact:
            return other.matches(self.pattern)
        if other.is_exact:
            return self.matches(other.pattern)
        return self.matches(other.pattern) or other.matches(self.pattern)
