"""Every kind of mistake in a tag file gets an error naming file, tag, field and line."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.tags.loader import TagLoader
from tests.conftest import ROOT, tagset

GOOD_TAG = """
    users:
      alice: {roles: [agent]}
    tags:
      - tag: role_agent
        kind: role
        payload:
          config:
            assigned_roles: [agent]
            allowed_tools: [crm__get]
"""


def errors(**files: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        tagset(**files)
    return [str(issue) for issue in caught.value.issues]


def test_valid_file_loads() -> None:
    loaded = tagset(acme=GOOD_TAG)
    assert set(loaded.orgs) == {"acme"}
    assert loaded.tag_count == 1


def test_yaml_syntax_error_names_file_and_line() -> None:
    found = errors(acme="tags:\n  - tag: a\n    kind: [role\n")
    assert len(found) == 1
    assert found[0].startswith("acme.yaml:4: invalid YAML:")


def test_duplicate_key_is_an_error_not_a_silent_overwrite() -> None:
    found = errors(acme="users:\n  alice: {}\n  alice: {roles: [x]}\n")
    assert found == ["acme.yaml:3: invalid YAML: duplicate key 'alice' (first at line 2)"]


def test_unknown_field_names_tag_field_and_line() -> None:
    text = GOOD_TAG.replace("allowed_tools:", "alowed_tools:")
    assert errors(acme=text) == [
        "acme.yaml:10: tag 'role_agent': payload.config.alowed_tools: unknown field"
    ]


def test_wrong_type_names_what_was_expected_and_got() -> None:
    text = GOOD_TAG.replace("        kind: role\n", "        kind: role\n        payload: 3\n", 1)
    text = text.replace("        payload:\n          config:", "        extra:\n          config:")
    found = errors(acme=text)
    assert "acme.yaml:7: tag 'role_agent': payload: expected a mapping (got 3)" in found


def test_bad_kind_lists_the_allowed_kinds() -> None:
    found = errors(acme=GOOD_TAG.replace("kind: role", "kind: rol"))
    assert len(found) == 1
    assert found[0].startswith("acme.yaml:6: tag 'role_agent': kind: Input should be 'company'")
    assert "'flow'" in found[0]
    assert "(got 'rol')" in found[0]


def test_missing_required_field() -> None:
    found = errors(acme="tags:\n  - tag: x\n")
    assert found == ["acme.yaml:2: tag 'x': kind: required field is missing"]


def test_tag_without_name_is_numbered() -> None:
    found = errors(acme="tags:\n  - kind: role\n")
    assert found == ["acme.yaml:2: tag '#1': tag: required field is missing"]


def test_yaml_type_surprise_is_caught() -> None:
    # YAML 1.1 reads `version: 2024-01-31` as a date; the config must not change meaning.
    text = GOOD_TAG.replace(
        "        payload:\n", "        payload:\n          meta: {version: 2024-01-31}\n"
    )
    found = errors(acme=text)
    assert found == [
        "acme.yaml:8: payload.meta.version: YAML read this as a date "
        "(datetime.date(2024, 1, 31)); quote it to make it text".replace(
            "acme.yaml:8: payload", "acme.yaml:8: tags[0].payload"
        )
    ]


def test_strict_types_no_coercion() -> None:
    text = GOOD_TAG.replace(
        "        payload:\n", "        payload:\n          meta: {priority: '5'}\n"
    )
    found = errors(acme=text)
    assert found == [
        "acme.yaml:8: tag 'role_agent': payload.meta.priority: expected a whole number (got '5')"
    ]


@pytest.mark.parametrize(
    ("constraint", "message"),
    [
        ("{min: 10, max: 5}", "min 10 is greater than max 5"),
        ("{pattern: '[a-'}", "pattern '[a-' is not a regex RE2 can run (missing ]: [a-)"),
        ("{pattern: '(a)\\1'}", "backreferences and lookaround are not supported"),
        ("{forbidden: true, max: 3}", "a forbidden argument cannot have other constraints"),
        ("{enum: []}", "enum must list at least one value"),
        ("{max: .inf}", "min and max must be finite numbers"),
        ("{max_length: -1}", "Input should be greater than or equal to 0"),
        ("{maximum: 3}", "unknown field"),
    ],
)
def test_bad_scope_constraint(constraint: str, message: str) -> None:
    text = (
        GOOD_TAG
        + f"            scopes:\n              crm__get:\n                amount: {constraint}\n"
    )
    found = errors(acme=text)
    assert len(found) == 1, found
    assert found[0].startswith(
        "acme.yaml:13: tag 'role_agent': payload.config.scopes.crm__get.amount"
    )
    assert message in found[0]


def test_one_mistake_repeated_by_aliases_is_listed_a_bounded_number_of_times() -> None:
    # Each alias is validated and reported on its own: a long bad pattern aliased 2,000
    # times made gateway check print 200 MB.
    pattern = "(a|b)" * 40 + "(?=x)"
    scopes = "".join(f"                a{i}: *bad\n" for i in range(1, 200))
    text = (
        GOOD_TAG
        + "            scopes:\n              crm__get:\n"
        + f"                a0: &bad {{pattern: '{pattern}'}}\n"
        + scopes
    )
    found = errors(acme=text)
    assert len(found) == 51
    assert found[-1] == "acme.yaml: and 150 more errors in this file, not listed"
    assert all(len(line) < 400 for line in found)  # the pattern is shown shortened


def test_scope_on_a_tool_the_tag_does_not_grant() -> None:
    text = (
        GOOD_TAG
        + "            scopes:\n              payments__refund:\n                amount: {max: 1}\n"
    )
    assert errors(acme=text) == [
        "acme.yaml:12: tag 'role_agent': payload.config.scopes.payments__refund: scope for "
        "'payments__refund' has no effect: this tag's allowed_tools do not grant it, and a "
        "scope only limits its own tag's grants"
    ]


def test_scope_with_empty_path_part() -> None:
    text = (
        GOOD_TAG + "            scopes:\n              crm__get:\n                a..b: {max: 1}\n"
    )
    found = errors(acme=text)
    assert found == [
        "acme.yaml:13: tag 'role_agent': payload.config.scopes.crm__get.a..b: "
        "argument path 'a..b' has an empty part"
    ]


def test_flow_needs_steps_and_other_kinds_need_text() -> None:
    flow = "tags:\n  - tag: f\n    kind: flow\n    payload:\n      content: do things\n"
    found = errors(acme=flow)
    assert found == ["acme.yaml:2: tag 'f': a flow tag's content must be a mapping with 'steps'"]
    role = "tags:\n  - tag: r\n    kind: role\n    payload:\n      content: {steps: []}\n"
    found = errors(acme=role)
    assert found == ["acme.yaml:2: tag 'r': a role tag's content must be text"]


def test_flow_step_errors_are_located() -> None:
    text = """
    tags:
      - tag: flow_x
        kind: flow
        payload:
          content:
            steps:
              - {id: a, tool: t1}
              - {id: a, tool: t2}
              - {id: c}
    """
    found = errors(acme=text)
    assert (
        "acme.yaml:10: tag 'flow_x': payload.content.steps[2].tool: required field is missing"
        in found
    )


def test_duplicate_step_ids() -> None:
    text = """
    tags:
      - tag: flow_x
        kind: flow
        payload:
          content:
            steps:
              - {id: a, tool: t1}
              - {id: a, tool: t2}
    """
    assert errors(acme=text) == [
        "acme.yaml:6: tag 'flow_x': payload.content: step id 'a' is used twice"
    ]


def test_duplicate_tag_names_in_one_file() -> None:
    text = "tags:\n  - {tag: a, kind: role}\n  - {tag: a, kind: tool}\n"
    assert errors(acme=text) == [
        "acme.yaml:3: tag 'a': tag name is used twice in this file (first at line 2)"
    ]


def test_org_field_must_match_file_name() -> None:
    found = errors(acme="org: globex\n")
    assert found == [
        "acme.yaml:1: org: org 'globex' does not match the file name; an org's tags live in "
        "'acme''s file only if it is org 'acme'"
    ]


def test_org_file_tag_cannot_scope_to_another_org() -> None:
    text = "tags:\n  - tag: a\n    kind: tool\n    payload:\n      config: {org_scope: [globex]}\n"
    found = errors(acme=text)
    assert len(found) == 1
    assert found[0].startswith("acme.yaml:5: tag 'a': payload.config.org_scope: a tag in org")
    assert "org_scope names globex" in found[0]


def test_shared_tag_needs_org_scope_and_known_orgs() -> None:
    shared = """
    tags:
      - {tag: s1, kind: tool}
      - tag: s2
        kind: tool
        payload: {config: {org_scope: [nosuch]}}
    """
    found = errors(acme="", _shared=shared)
    assert (
        "_shared.yaml:3: tag 's1': a shared tag must name its orgs in org_scope "
        "(or '*' for every org)" in found
    )
    assert len(found) == 1  # the file is rejected before cross-file rules run
    found = errors(
        acme="",
        _shared="tags:\n  - {tag: s2, kind: tool, payload: {config: {org_scope: [nosuch]}}}\n",
    )
    assert found == [
        "_shared.yaml:2: tag 's2': payload.config.org_scope: org_scope names org 'nosuch', "
        "which has no file (nosuch.yaml) in the tags directory"
    ]


def test_shared_file_has_no_users() -> None:
    found = errors(_shared="users: {a: {}}\n")
    assert found == [
        "_shared.yaml:1: users: a shared tags file (name starting with '_') has no 'users'; "
        "its tags name their orgs in org_scope"
    ]


def test_org_tag_clashing_with_shared_tag() -> None:
    shared = "tags:\n  - {tag: t, kind: tool, payload: {config: {org_scope: [acme]}}}\n"
    found = errors(acme="tags:\n  - {tag: t, kind: tool}\n", _shared=shared)
    assert found == ["acme.yaml:2: tag 't': tag name clashes with the shared tag at _shared.yaml:2"]


def test_unknown_include() -> None:
    text = "tags:\n  - {tag: a, kind: role, payload: {meta: {includes: [b]}}}\n"
    assert errors(acme=text) == [
        "acme.yaml:2: tag 'a': payload.meta.includes[0]: includes unknown tag 'b'"
    ]


def test_include_of_tag_from_another_org_is_unknown() -> None:
    found = errors(
        acme="tags:\n  - {tag: a, kind: role, payload: {meta: {includes: [g]}}}\n",
        globex="tags:\n  - {tag: g, kind: tool}\n",
    )
    assert found == ["acme.yaml:2: tag 'a': payload.meta.includes[0]: includes unknown tag 'g'"]


def test_include_cycle_is_reported_with_its_path() -> None:
    text = """
    tags:
      - {tag: a, kind: role, payload: {meta: {includes: [b]}}}
      - {tag: b, kind: function, payload: {meta: {includes: [c]}}}
      - {tag: c, kind: tool, payload: {meta: {includes: [a]}}}
      - {tag: d, kind: tool, payload: {meta: {includes: [d]}}}
    """
    found = errors(acme=text)
    assert found == [
        "acme.yaml:3: tag 'a': payload.meta.includes: includes form a cycle: a -> b -> c -> a",
        "acme.yaml:6: tag 'd': payload.meta.includes: includes form a cycle: d -> d",
    ]


def test_every_error_of_every_file_is_reported_together() -> None:
    found = errors(
        acme="tags:\n  - {tag: a, kind: nope}\n  - {tag: b, kind: role, bogus: 1}\n",
        globex="tags: [\n",
    )
    assert len(found) == 3
    assert any(f.startswith("acme.yaml:2: tag 'a': kind:") for f in found)
    assert "acme.yaml:3: tag 'b': bogus: unknown field" in found
    assert any(f.startswith("globex.yaml:") and "invalid YAML" in f for f in found)


def test_top_level_must_be_a_mapping() -> None:
    assert errors(acme="- a\n- b\n") == [
        "acme.yaml:1: expected a mapping with 'tags' (and 'users')"
    ]


def test_bad_names() -> None:
    found = errors(acme="tags:\n  - {tag: 'bad name', kind: role}\n")
    assert len(found) == 1
    assert found[0].startswith("acme.yaml:2: tag 'bad name': tag: String should match pattern")
    found = errors(
        acme="tags:\n  - {tag: a, kind: role, payload: {config: {assigned_users: ['a b']}}}\n"
    )
    assert found == [
        "acme.yaml:2: tag 'a': payload.config: assigned_users entry 'a b' is neither a user "
        "name nor '*' (every user)"
    ]


def bomb_lines(levels: int, indent: str = "") -> str:
    """ "Billion laughs": each line anchors nine aliases of the line before (9**levels)."""
    lines = [f"{indent}a0: &a0 [{', '.join(['lol'] * 9)}]\n"]
    lines += [f"{indent}a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, levels)]
    return "".join(lines)


def test_an_alias_bomb_in_an_accepted_value_is_refused_by_line() -> None:
    # 9**6 values: over the limit, and small enough for code without one to survive.
    text = (
        GOOD_TAG
        + "            scopes:\n              crm__get:\n                amount:\n"
        + "                  const:\n"
        + bomb_lines(6, " " * 20)
    )
    assert errors(acme=text) == [
        "acme.yaml:20: invalid YAML: aliases expand this list to more than 500,000 values "
        "(the limit keeps alias bombs out)"
    ]


def test_a_control_character_is_named_by_line() -> None:
    assert errors(acme=GOOD_TAG.replace("crm__get", "crm__\x00get")) == [
        "acme.yaml:10: invalid YAML: character U+0000 is not allowed in YAML text; "
        "in a double-quoted string, write it as \\u0000"
    ]


def test_bytes_that_are_not_utf8_are_named_by_line(tags_dir: Callable[..., Path]) -> None:
    directory = tags_dir()
    (directory / "acme.yaml").write_bytes(b"users: {}\ntags:\n  - tag: \xc3(\n")
    with pytest.raises(ConfigError) as caught:
        TagLoader(directory, directory).load()
    assert [str(issue) for issue in caught.value.issues] == [
        "acme.yaml:3: file is not UTF-8 text: invalid continuation byte (byte 0xc3)"
    ]


def test_a_huge_tag_file_is_refused_unread(tags_dir: Callable[..., Path]) -> None:
    directory = tags_dir(globex=GOOD_TAG)
    with (directory / "acme.yaml").open("wb") as file:
        file.truncate(64 * 1024 * 1024)  # sparse: takes no disk
    with pytest.raises(ConfigError) as caught:
        TagLoader(directory, directory).load()
    assert [str(issue) for issue in caught.value.issues] == [
        "acme.yaml: file is larger than 2 MiB, the limit for a config file"
    ]


@pytest.mark.parametrize("where", ["tag file", "gateway.yaml"])
def test_gateway_check_refuses_a_billion_laughs(tmp_path: Path, where: str) -> None:
    """The whole bomb (9**9 values), through `gateway check` in a child process whose
    address space is limited, so that code without the limit fails here and not the host."""
    orgs = tmp_path / "orgs"
    orgs.mkdir()
    bomb = bomb_lines(9)
    config = "tags: {dir: orgs}\n"
    tags = textwrap.dedent(GOOD_TAG)
    if where == "gateway.yaml":
        config = bomb + config
    else:
        tags = bomb + tags
    (tmp_path / "gateway.yaml").write_text(config)
    (orgs / "acme.yaml").write_text(tags)

    done = subprocess.run(
        [sys.executable, "-c", CLI, "check", "--config", str(tmp_path / "gateway.yaml")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    file = tmp_path / "gateway.yaml" if where == "gateway.yaml" else Path("orgs/acme.yaml")
    assert (done.returncode, done.stderr) == (
        2,
        f"1 configuration error:\n  {file}:6: invalid YAML: aliases expand this list to "
        "more than 500,000 values (the limit keeps alias bombs out)\n",
    )


CLI = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB, before the import
from gateway.cli import main
sys.exit(main(sys.argv[1:]))
"""
