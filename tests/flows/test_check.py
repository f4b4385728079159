"""`gateway check --upstreams`: every flow's steps against the live catalog of a real
upstream (tests/flows/servers/ops.py over stdio): unknown tools, literal arguments that do
not fit a tool's inputSchema, templated ones that leave a required argument out, and
retries of a tool that may act twice, each named by file, line, tag and step."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, Run
from tests.flows.helpers import flow_tag, org_text


def config(tmp_path: Path, *flows: dict[str, Any]) -> str:
    (tmp_path / "orgs").mkdir()
    (tmp_path / "orgs" / "acme.yaml").write_text(org_text(*flows))
    path = tmp_path / "gateway.yaml"
    upstream = {
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-m", "tests.flows.servers.ops"],
        "cwd": str(ROOT),
    }
    path.write_text(
        json.dumps(
            {
                "data_dir": str(tmp_path / "data"),
                "tags": {"dir": "orgs", "watch": False},
                "upstreams": {"ops": upstream},
            }
        )
    )
    return str(path)


def steps(*listed: dict[str, Any]) -> dict[str, Any]:
    return {
        "inputs": {"type": "object", "properties": {"n": {"type": "integer"}}},
        "steps": list(listed),
    }


def tag_line(path: str, name: str) -> int:
    text = (Path(path).parent / "orgs" / "acme.yaml").read_text()
    return next(i for i, line in enumerate(text.splitlines(), 1) if f"tag: {name}" in line)


def test_the_steps_of_every_flow_are_checked_against_the_live_tools(
    tmp_path: Path, run: Run
) -> None:
    bad = flow_tag(
        "flow_bad",
        steps(
            {"id": "nowhere", "tool": "ops__nothing"},
            {"id": "literal", "tool": "ops__add", "args": {"a": 1, "b": "two"}},
            {"id": "partial", "tool": "ops__add", "args": {"a": "{{ input.n }}"}},
            {"id": "mixed", "tool": "ops__add", "args": {"a": "{{ input.n }}", "b": "two"}},
            {"id": "texty", "tool": "ops__add", "args": {"a": "n={{ input.n }}", "b": 1}},
            {"id": "nested", "tool": "gateway__flow__other"},
            {"id": "twice", "tool": "ops__write", "args": {"what": "x"}, "on_error": "retry"},
            {
                "id": "fine",
                "tool": "ops__flaky",
                "args": {"name": "{{ input.n }}"},
                "on_error": "retry",
            },
        ),
    )
    good = flow_tag(
        "flow_good",
        steps(
            {"id": "sum", "tool": "ops__add", "args": {"a": "{{ input.n }}", "b": 2}},
            {"id": "unsafe", "tool": "ops__write", "on_error": "retry", "retry_unsafe": True},
        ),
    )
    path = config(tmp_path, bad, good)
    code, out, err = run("check", "--config", path)  # without --upstreams: the files only
    assert code == 0, err
    code, out, err = run("check", "--upstreams", "--config", path)
    assert code == 2, out + err
    where = f"orgs/acme.yaml:{tag_line(path, 'flow_bad')}: tag 'flow_bad'"
    problems = [line for line in out.splitlines() if line.startswith("orgs/")]
    assert problems == [
        f"{where}: step 'nowhere': no tool 'ops__nothing' in the live catalog",
        f"{where}: step 'literal': args do not fit ops__add's inputSchema: b: 'two' is not of "
        "type 'integer'",
        f"{where}: step 'partial': args do not fit ops__add's inputSchema: required argument b "
        "left out",
        f"{where}: step 'mixed': args do not fit ops__add's inputSchema: b: 'two' is not of "
        "type 'integer'",
        f"{where}: step 'texty': args do not fit ops__add's inputSchema: a: a template with "
        "text around it makes text, not integer",
        f"{where}: step 'nested': a flow's step cannot call a flow's tool (gateway__flow__other)",
        f"{where}: step 'twice': on_error is retry, but ops__write is neither read-only nor "
        "idempotent, so a retry may act twice; write retry_unsafe: true to retry it anyway",
    ]


def test_flows_that_fit_the_live_tools_pass(tmp_path: Path, run: Run) -> None:
    path = config(
        tmp_path,
        flow_tag("flow_sum", steps({"id": "sum", "tool": "ops__add", "args": {"a": 1, "b": 2}})),
    )
    code, out, err = run("check", "--upstreams", "--config", path)
    assert code == 0, out + err
    assert out.splitlines()[-1] == "ok: the steps of 1 flows against 8 live tools"


def test_steps_of_an_upstream_that_is_down_are_not_passed(tmp_path: Path, run: Run) -> None:
    path = config(
        tmp_path,
        flow_tag("flow_sum", steps({"id": "sum", "tool": "ops__add", "args": {"a": 1, "b": 2}})),
    )
    data = json.loads(Path(path).read_text())
    data["upstreams"]["ops"]["args"] = ["-c", "raise SystemExit(1)"]
    data["upstreams"]["ops"]["init_timeout"] = 5
    Path(path).write_text(json.dumps(data))
    code, out, err = run("check", "--upstreams", "--config", path)
    assert code == 1, out + err
    assert "warning: upstream ops is down" in out
    assert "the steps of its tools are not checked" in out
    assert "ok: the steps" not in out
