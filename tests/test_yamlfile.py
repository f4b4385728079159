"""The YAML reader builds exactly what PyYAML's safe loader builds, minus duplicate keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.errors import ConfigError
from gateway.yamlfile import parse_yaml, read_yaml

SAME_AS_PYYAML = {
    "scalars": "a: text\nb: 12\nc: 1.5\nd: true\ne: null\nf: ~\ng: '12'\nh: 0x1f\ni: .inf\n",
    "nesting": "tags:\n  - tag: t\n    payload: {meta: {priority: 2}, content: [1, [2, {x: y}]]}\n",
    "explicit tags": "a: !!str 12\nb: !!int '7'\nc: !!float 1\nd: !!set {x, y}\n",
    "dates": "a: 2024-01-02\nb: 2024-01-02T03:04:05Z\n",
    "anchors": "base: &b {x: 1, y: [1, 2]}\nother: *b\nlist: &l [a, b]\nagain: *l\n",
    "merge": "base: &b {x: 1, y: 2}\nchild:\n  <<: *b\n  y: 3\n  z: 4\n",
    "merge list": "a: &a {x: 1}\nb: &b {y: 2}\nc:\n  <<: [*a, *b]\n  x: 0\n",
    "non-text keys": "7: one\ntrue: yes\nnull: nothing\n2.5: x\n",
    "empty": "",
    "top-level list": "- 1\n- two\n",
    "multi-line text": "a: |\n  line one\n  line two\nb: >-\n  folded\n  text\n",
}


@pytest.mark.parametrize("text", SAME_AS_PYYAML.values(), ids=SAME_AS_PYYAML.keys())
def test_builds_what_pyyaml_builds(text: str) -> None:
    assert parse_yaml(text, Path("f.yaml"), "f.yaml").data == yaml.safe_load(text)


def bomb(levels: int, width: int, merge: bool = False) -> str:
    """Layers of anchors, each `width` aliases of the one before: "billion laughs"."""
    if merge:  # each layer merges the one before `width` times, plus a key of its own
        layers = [
            f"a{i}: &a{i} {{<<: [{', '.join([f'*a{i - 1}'] * width)}], k{i}: x}}"
            for i in range(1, levels)
        ]
        return "a0: &a0 {k0: x}\n" + "\n".join(layers) + "\n"
    layers = [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return f"a0: &a0 [{', '.join(['lol'] * width)}]\n" + "\n".join(layers) + "\n"


def test_an_alias_yields_the_same_object_so_alias_trees_stay_small() -> None:
    data = parse_yaml(bomb(5, 10), Path("f.yaml"), "f.yaml").data  # 111,111 values expanded
    assert data["a4"][0] is data["a4"][9] is data["a3"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\nb: 2\na: 3\n", "f.yaml:3: invalid YAML: duplicate key 'a' (first at line 1)"),
        (
            "base: &b {x: 1}\nc:\n  <<: *b\n  y: 1\n  y: 2\n",
            "f.yaml:5: invalid YAML: duplicate key 'y'",
        ),
        ("a: &a [*a]\n", "f.yaml:1: invalid YAML: an alias refers to a node that contains it"),
        (
            "? [1, 2]\n: x\n",
            "f.yaml:1: invalid YAML: while constructing a mapping found unhashable key",
        ),
        ("a: !!binary 'not base64!'\n", "f.yaml:1: invalid YAML: failed to decode base64 data"),
        (
            "a: !custom x\n",
            "f.yaml:1: invalid YAML: could not determine a constructor for the tag '!custom'",
        ),
        ("a: [1, 2\n", "f.yaml:2: invalid YAML: while parsing a flow sequence"),
        ("[" * 5000, "f.yaml"),
    ],
)
def test_bad_yaml_is_named_by_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, Path("f.yaml"), "f.yaml")
    assert str(caught.value.issues[0]).startswith(message)


MIB = 1024 * 1024
DEEP_ALIAS = "a: &a " + "[" * 60 + "]" * 60 + "\nb: " + "[" * 60 + "*a" + "]" * 60 + "\n"
HOSTILE = {
    # Each of these is small enough that the code before the limits survives it.
    "alias bomb": (
        bomb(7, 9),
        "f.yaml:6: invalid YAML: aliases expand this list to more than 500,000 values",
    ),
    "alias bomb of mappings": (
        "a0: &a0 {x: [lol, lol, lol, lol, lol, lol, lol, lol, lol]}\n"
        + "\n".join(
            f"a{i}:\n  &a{i}\n" + "".join(f"  k{j}: *a{i - 1}\n" for j in range(9))
            for i in range(1, 7)
        ),
        "f.yaml:51: invalid YAML: aliases expand this mapping to more than 500,000 values",
    ),
    "merge-key bomb": (
        bomb(7, 10, merge=True),
        "f.yaml:7: invalid YAML: aliases expand this list to more than 500,000",
    ),
    "many aliases": (
        "a: &a [x, x]\nb: [" + "*a, " * 170_000 + "]\n",
        "f.yaml:2: invalid YAML: aliases expand this list to more than 500,000 values",
    ),
    "deep by aliases": (
        DEEP_ALIAS,
        "f.yaml:2: invalid YAML: aliases nest this list more than 100 levels deep",
    ),
    "deep": ("[" * 600 + "]" * 600, "f.yaml:1: invalid YAML: nested more than 100 levels deep"),
    "deep block": (
        "".join(" " * i + "a:\n" for i in range(150)),
        "f.yaml:101: invalid YAML: nested more than 100 levels deep",
    ),
    "self-containing": (
        "a: &a [*a]\n",
        "f.yaml:1: invalid YAML: an alias refers to a node that contains it",
    ),
    "huge": ("#" + "x" * 2 * MIB + "\n", "f.yaml: file is larger than 2 MiB"),
    "huge in UTF-8": (
        "#" + "é" * MIB + "\n",
        "f.yaml: file is larger than 2 MiB",
    ),
    "NUL": ("a: 1\nb: éé\x00\n", "f.yaml:2: invalid YAML: character U+0000 is not allowed"),
    "control character after CRLF and NEL": (
        "a: 1\r\nb: 'x\x85y'\nc: \x07\n",
        "f.yaml:4: invalid YAML: character U+0007 is not allowed",
    ),
    "BOM-like non-character": ("a: 1\n\n  b: \ufffe\n", "f.yaml:3: invalid YAML: character U+FFFE"),
    # PyYAML copies each merging mapping's keys again at every level of nesting: a
    # minute of CPU for a small file with no alias at all.
    "nested merge keys": (
        "a: " + "{<<: " * 90 + "{" + ", ".join(f"k{i}: 1" for i in range(6000)) + "}" + "}" * 90,
        "f.yaml:1: invalid YAML: merge keys (<<) make PyYAML copy more than 500,000 values",
    ),
    # Base-60 numbers are read in quadratic time; Python refuses 4,300 digits or more.
    "long base-60 number": (
        "a: 1" + ":1" * 5000 + "\n",
        "f.yaml:1: invalid YAML: a number of more than 100 characters",
    ),
    "huge integer": ("a: 1" + "0" * 5000 + "\n", "f.yaml:1: invalid YAML: a number of more"),
}


@pytest.mark.parametrize(("text", "message"), HOSTILE.values(), ids=HOSTILE.keys())
def test_what_a_file_may_cost_is_bounded_and_named_by_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, Path("f.yaml"), "f.yaml")
    assert str(caught.value.issues[0]).startswith(message)


def test_merge_keys_and_numbers_within_the_limits_still_load() -> None:
    text = "base: &b {x: 1, y: 2}\nc: {<<: {<<: *b, z: 3}, w: 4}\nn: 1:30\nbig: " + "9" * 99
    data = parse_yaml(text, Path("f.yaml"), "f.yaml").data
    assert data["c"] == {"x": 1, "y": 2, "z": 3, "w": 4}
    assert data["n"] == 90  # YAML 1.1 base 60, as PyYAML reads it
    assert data["big"] == int("9" * 99)


def test_aliases_within_the_limits_still_load() -> None:
    text = "base: &b {x: 1, y: [1, 2]}\n" + "".join(
        f"k{i}: {{<<: *b, z: *b}}\n" for i in range(200)
    )
    data = parse_yaml(text + DEEP_ALIAS.split("\n")[0] + "\n", Path("f.yaml"), "f.yaml").data
    assert data["k199"] == {"x": 1, "y": [1, 2], "z": {"x": 1, "y": [1, 2]}}


def test_a_file_that_is_not_utf8_is_named_by_line(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_bytes("a: é\nb: 2\nc: \xff\n".encode("latin-1").replace(b"\xe9", "é".encode()))
    with pytest.raises(ConfigError) as caught:
        read_yaml(path, "gateway.yaml")
    assert str(caught.value.issues[0]) == (
        "gateway.yaml:3: file is not UTF-8 text: invalid start byte (byte 0xff)"
    )


def test_a_huge_file_is_not_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    with path.open("wb") as file:  # sparse: takes no disk
        file.truncate(64 * MIB)
    with pytest.raises(ConfigError) as caught:
        read_yaml(path, "gateway.yaml")
    assert str(caught.value.issues[0]) == (
        "gateway.yaml: file is larger than 2 MiB, the limit for a config file"
    )
