"""Regular expressions matched in time linear in the text (RE2), for every pattern the
gateway applies to a caller's arguments: a tag's scope `pattern`, an upstream schema's
`pattern` and `patternProperties`. Python's `re` backtracks, and `^(a+)+$` on a crafted
argument held the event loop for seconds.

google-re2's own `search` and `fullmatch` build match objects and map byte offsets back
to characters: about 15 µs a call, where Python's `re` takes 0.5. A yes or no needs none
of that, so a match goes to the compiled RE2 object directly (`_regexp.Match`, with
`re2._Anchor`): internals of google-re2, pinned by the `google-re2>=1.1,<2` requirement
and checked here at import; without them the public API serves, slower.
"""

from __future__ import annotations

from typing import Any

import re2

QUIET = re2.Options()
QUIET.log_errors = False  # a pattern RE2 refuses is an answer for the caller, not a stderr line

_NO_MATCH = (-1, -1)

try:
    _UNANCHORED: Any = re2._Anchor.UNANCHORED  # type: ignore[attr-defined]
    _BOTH: Any = re2._Anchor.ANCHOR_BOTH  # type: ignore[attr-defined]
    _probe: Any = re2.compile("a", QUIET)._regexp  # type: ignore[attr-defined]
    _DIRECT = _probe.Match(_UNANCHORED, b"a", 0, 1)[0] != _NO_MATCH
except (AttributeError, TypeError, IndexError):  # another google-re2: the public API
    _DIRECT = False


class PatternError(ValueError):
    """A pattern RE2 cannot run (backreferences, lookaround) or that is no regex at all."""


class LinearPattern:
    __slots__ = ("_compiled", "_regexp", "pattern")

    def __init__(self, pattern: str) -> None:
        try:
            self._compiled = re2.compile(pattern, QUIET)
        except re2.error as exc:
            detail = exc.args[0] if exc.args else exc
            text = detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
            raise PatternError(text) from None
        self._regexp: Any = self._compiled._regexp if _DIRECT else None  # type: ignore[attr-defined]
        self.pattern = pattern

    def search(self, text: str) -> bool:
        """Whether the pattern matches anywhere in `text` (JSON Schema's `pattern`)."""
        if self._regexp is None:
            return self._compiled.search(text) is not None
        data = text.encode("utf-8", "surrogatepass")
        return bool(self._regexp.Match(_UNANCHORED, data, 0, len(data))[0] != _NO_MATCH)

    def fullmatch(self, text: str) -> bool:
        """Whether the pattern matches the whole of `text` (a tag scope's `pattern`)."""
        if self._regexp is None:
            return self._compiled.fullmatch(text) is not None
        data = text.encode("utf-8", "surrogatepass")
        return bool(self._regexp.Match(_BOTH, data, 0, len(data))[0] != _NO_MATCH)
