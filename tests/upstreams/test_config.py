"""The `upstreams:` section of gateway.yaml: what loads, and what each mistake says."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import load_config
from gateway.upstreams.config import (
    HttpUpstream,
    MissingVariable,
    OnDefinitionChange,
    StdioUpstream,
    expand,
    public_prefix,
    references,
)
from tests.upstreams.helpers import config_errors, write_config


def test_entries_load_with_their_defaults(tmp_path: Path) -> None:
    config = load_config(
        write_config(
            tmp_path,
            """
upstreams:
  time:
    transport: stdio
    command: uvx
    args: [mcp-server-time]
    env: {TZ: Europe/Paris}
  crm:
    transport: streamable_http
    url: https://crm.internal/mcp
    headers: {Authorization: "Bearer ${CRM_TOKEN}"}
    prefix: ""
    call_timeout: 5
    on_definition_change: quarantine
  old:
    transport: sse
    url: http://127.0.0.1:9000/sse
    enabled: false
""",
        )
    )
    time, crm, old = (config.settings.upstreams[n] for n in ("time", "crm", "old"))
    assert isinstance(time, StdioUpstream)
    assert (time.command, time.args, time.env, time.cwd) == (
        "uvx",
        ("mcp-server-time",),
        {"TZ": "Europe/Paris"},
        None,
    )
    assert (time.call_timeout, time.init_timeout, time.enabled) == (60.0, 10.0, True)
    assert time.on_definition_change is OnDefinitionChange.AUDIT
    assert public_prefix("time", time) == "time__"
    assert isinstance(crm, HttpUpstream)
    assert (crm.transport, crm.call_timeout, public_prefix("crm", crm)) == (
        "streamable_http",
        5.0,
        "",
    )
    assert crm.on_definition_change is OnDefinitionChange.QUARANTINE
    assert isinstance(old, HttpUpstream)
    assert (old.transport, old.enabled) == ("sse", False)


def test_no_upstreams_is_fine(tmp_path: Path) -> None:
    assert load_config(write_config(tmp_path, "server: {port: 8080}\n")).settings.upstreams == {}


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            "bad: {transport: pigeon}",
            "3: upstreams.bad.transport: expected one of 'stdio', 'streamable_http', 'sse' "
            "(got 'pigeon')",
        ),
        ("bad: {command: x}", "3: upstreams.bad.transport: required field is missing"),
        ("bad: {transport: stdio}", "3: upstreams.bad.command: required field is missing"),
        (
            "bad: {transport: sse, url: 'ftp://x'}",
            "3: upstreams.bad.url: expected an http:// or https:// URL",
        ),
        (
            "bad: {transport: stdio, command: x, on_definition_change: maybe}",
            "3: upstreams.bad.on_definition_change: Input should be 'accept', 'audit' or "
            "'quarantine' (got 'maybe')",
        ),
        (
            "bad: {transport: stdio, command: x, prefix: 'a b'}",
            "3: upstreams.bad.prefix: String should match pattern",
        ),
        (
            "bad: {transport: stdio, command: x, call_timeout: 0}",
            "3: upstreams.bad.call_timeout: Input should be greater than 0",
        ),
        (
            "bad: {transport: stdio, command: x, caller_sessions_per_user: 0}",
            "3: upstreams.bad.caller_sessions_per_user: Input should be greater than or equal to 1",
        ),
        (
            "bad: {transport: stdio, command: x, url: 'http://x'}",
            "3: upstreams.bad.url: unknown field",
        ),
        ("bad name: {transport: stdio, command: x}", "3: upstreams.bad name: String should"),
    ],
)
def test_each_mistake_is_named(tmp_path: Path, entry: str, expected: str) -> None:
    found = config_errors(tmp_path, f"\nupstreams:\n  {entry}\n")
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


def test_two_upstreams_with_one_prefix_is_an_error_naming_both(tmp_path: Path) -> None:
    found = config_errors(
        tmp_path,
        """upstreams:
  a: {transport: stdio, command: x}
  b: {transport: stdio, command: y, prefix: a__}
  c: {transport: stdio, command: z, prefix: ""}
  d: {transport: stdio, command: z, prefix: ""}
""",
    )
    assert found == [
        "3: upstreams.b.prefix: prefix 'a__' is also upstream 'a''s; give each upstream its own"
    ]


def test_references_expand_from_the_environment() -> None:
    environ = {"TOKEN": "s3cret", "HOST": "crm"}
    assert expand("Bearer ${TOKEN}", "crm", "header Authorization", environ) == "Bearer s3cret"
    assert expand("${HOST}:$${HOST}", "crm", "url", environ) == "crm:${HOST}"
    assert expand("no reference", "crm", "url", {}) == "no reference"
    assert references("a ${A} b ${B_2} $${C}") == ["A", "B_2"]


def test_a_missing_variable_is_named_never_a_value() -> None:
    with pytest.raises(MissingVariable) as caught:
        expand("Bearer ${TOKEN} ${HOST}", "crm", "header Authorization", {"HOST": "secret-h"})
    assert str(caught.value) == (
        "upstream 'crm': header Authorization refers to ${TOKEN}, which is not set in the "
        "gateway's environment"
    )
