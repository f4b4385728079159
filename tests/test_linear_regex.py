"""linear_regex: RE2 matching, through google-re2's compiled object directly, agrees with
Python's re on the patterns both run."""

from __future__ import annotations

import re

import pytest

from gateway import linear_regex
from gateway.linear_regex import LinearPattern, PatternError

PATTERNS = ["ORD-[0-9]{6}", "^(a+)+$", "é+", "[A-Z][a-z]*", "", "a|bc", "x.y", r"\d+\s\w+"]
TEXTS = ["", "ORD-123456", "xORD-123456y", "aaaa", "aaaa!", "ééé", "Zürich", "bc", "x\ny", "12 ab"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_search_and_fullmatch_agree_with_re(pattern: str) -> None:
    ours, theirs = LinearPattern(pattern), re.compile(pattern)
    for text in TEXTS:
        assert ours.search(text) == (theirs.search(text) is not None), (pattern, text)
        assert ours.fullmatch(text) == (theirs.fullmatch(text) is not None), (pattern, text)


def test_the_fast_path_is_the_one_in_use() -> None:
    # google-re2's internals it relies on are there (else it would serve, 10 times slower).
    assert linear_regex._DIRECT


def test_a_pattern_re2_cannot_run_is_refused_with_the_reason() -> None:
    with pytest.raises(PatternError, match="invalid perl operator"):
        LinearPattern("a(?=b)")
    with pytest.raises(PatternError, match="missing \\]"):
        LinearPattern("[a-")


def test_text_that_is_not_valid_unicode_matches_nothing_it_should_not() -> None:
    assert not LinearPattern("^a$").fullmatch("a\ud800")
