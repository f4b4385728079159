"""The YAML reader builds exactly what PyYAML's safe loader builds, minus duplicate keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.errors import ConfigError
from gateway.yamlfile import parse_yaml

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


def test_an_alias_yields_the_same_object_so_alias_trees_stay_small() -> None:
    layers = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    layers += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    data = parse_yaml("\n".join(layers) + "\n", Path("f.yaml"), "f.yaml").data
    assert data["a8"][0] is data["a8"][9] is data["a7"]


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
