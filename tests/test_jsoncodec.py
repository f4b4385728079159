"""What JSON text can carry (jsoncodec.unencodable), checked for every call before the
permission check: it must find each problem with its path, and stay quick and bounded on
wide, deep and shared values."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import jsoncodec
from gateway.jsoncodec import MAX_DEPTH, MAX_VALUES, PARSE_DEPTH, unencodable


def nested(levels: int) -> Any:
    """`levels` lists, one in the other."""
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def depth(value: Any) -> int:
    levels = 0
    while isinstance(value, list):
        levels += 1
        value = value[0] if value else None
    return levels


def test_wide_values_pass_the_quick_walk() -> None:
    rows = {"rows": [{"id": n, "name": f"row {n} ✓", "tags": ["a", "b"]} for n in range(10_000)]}
    assert unencodable(rows, "arguments") is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"a": [1, {"b": float("nan")}]}, "arguments.a.1.b: nan is not a JSON number"),
        (
            {"a": ["ok", "\ud800"]},
            "arguments.a.1: text that is not valid Unicode (a lone surrogate)",
        ),
        (
            {"a": {"\udfff": 1}},
            "arguments.a.\\udfff: a key that is not valid Unicode (a lone surrogate)",
        ),
        ({"a": {1: 2}}, "arguments.a: a key that is not text (int)"),
        ({"a": [b"bytes"]}, "arguments.a.0: a bytes, which is not a JSON value"),
        ({"a": nested(MAX_DEPTH)}, f"arguments.a: nested more than {MAX_DEPTH} levels deep"),
    ],
)
def test_each_problem_is_named_with_its_path(value: Any, problem: str) -> None:
    assert unencodable(value, "arguments") == problem


def test_depth_counts_the_value_itself() -> None:
    assert unencodable(nested(MAX_DEPTH)) is None
    # Where it is too deep: the first step of the path down (here, the list's item 0).
    assert unencodable(nested(MAX_DEPTH + 1)) == f"0: nested more than {MAX_DEPTH} levels deep"


def test_a_value_that_contains_itself_ends_at_the_depth_limit() -> None:
    looped: list[Any] = []
    looped.append(looped)
    assert unencodable({"x": looped}, "arguments") == (
        f"arguments.x: nested more than {MAX_DEPTH} levels deep"
    )


def test_a_value_with_shared_parts_is_walked_within_a_budget() -> None:
    """Twenty-five levels of [a, a] are 2**25 paths to one list: without a bound on the
    values looked at, the walk would take minutes (the test's timeout)."""
    shared: Any = [1]
    for _ in range(25):
        shared = [shared, shared]
    assert unencodable({"x": shared}, "arguments") == f"arguments: more than {MAX_VALUES:,} values"


def test_too_many_values_are_refused_whole() -> None:
    assert unencodable([0] * (MAX_VALUES + 1), "arguments") == (
        f"arguments: more than {MAX_VALUES:,} values"
    )
    assert unencodable([0] * (MAX_VALUES // 2), "arguments") is None


def test_loads_reads_as_deep_as_orjson_on_either_road() -> None:
    """Bodies with a number past 64 bits take the standard library's parser (exact big
    integers), the others orjson's: both read to the same depth, and past it both raise
    ValueError, never RecursionError."""
    for long_number in ("", '"id": 12345678901234567890123, '):
        deep = "[" * 500 + "]" * 500
        parsed = jsoncodec.loads(f'{{{long_number}"p": {deep}}}'.encode())["p"]
        assert depth(parsed) == 500
        too_deep = "[" * (PARSE_DEPTH + 10) + "]" * (PARSE_DEPTH + 10)
        with pytest.raises(ValueError, match=r"depth|deep"):
            jsoncodec.loads(f'{{{long_number}"p": {too_deep}}}'.encode())
