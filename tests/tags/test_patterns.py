"""Tool-name globs: matching as fnmatch does, and an exact overlap test."""

from __future__ import annotations

import fnmatch
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.tags.patterns import ToolGlob

ALPHABET = "abc]z["
WORDS = tuple("".join(w) for n in range(6) for w in itertools.product(ALPHABET, repeat=n))
"""Every word up to five characters over an alphabet that exercises each atom below."""
ATOMS = (
    "a",
    "b",
    "*",
    "?",
    "[ab]",
    "[!a]",
    "[b-c]",
    "[!a-b]",
    "[",
    "[]a]",
    "[!]]",
    "[c-a]",
    "[!c-a]",
)
GLOBS = st.lists(st.sampled_from(ATOMS), min_size=1, max_size=3).map("".join)


@settings(max_examples=300, deadline=None)
@given(GLOBS, GLOBS)
def test_overlap_is_exact(left: str, right: str) -> None:
    """Checked against brute force: short words suffice, as every glob here has at most
    three atoms, so a shared word, if any, has a short one too."""
    a, b = ToolGlob.compile(left), ToolGlob.compile(right)
    shared = any(a.matches(word) and b.matches(word) for word in WORDS)
    assert a.overlaps(b) is shared
    assert b.overlaps(a) is shared


@settings(max_examples=200, deadline=None)
@given(GLOBS, st.sampled_from(WORDS))
def test_matches_as_fnmatch_does(pattern: str, word: str) -> None:
    assert ToolGlob.compile(pattern).matches(word) is fnmatch.fnmatchcase(word, pattern)


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ("crm__[gu]*", "crm__[gu]*", True),  # a bracket glob overlaps itself
        ("crm__*", "*__delete", True),
        ("crm__*", "payments__*", False),
        ("*__get_*", "*__delete_*", True),  # x__get_y__delete_z
        ("*__get", "*__delete", False),
        ("crm__get_customer", "crm__*", True),
        ("crm__get_customer", "crm__get_order", False),
        ("[a-c]x", "[c-e]x", True),
        ("[a-c]x", "[d-e]x", False),
    ],
)
def test_overlap_examples(left: str, right: str, expected: bool) -> None:
    assert ToolGlob.compile(left).overlaps(ToolGlob.compile(right)) is expected
