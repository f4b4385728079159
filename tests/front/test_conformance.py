"""The official MCP conformance suite (server scenarios) against the gateway, fronting the
project's conformance upstream (tests/servers/conformance.py) with an empty prefix: the
0.1.16 line's active suite, and the 0.2 line's scenarios of each revision it has frozen
(`--requirements 2025-11-25` and `--requirements 2026-07-28`, scored or not).

Authentication stays on: the suite cannot send a header, so the gateway's test-only
`auth.loopback_principal` (allowed in dev configs only) maps its credential-less loopback
requests to one principal, whose tags grant every tool. No header is injected, so none of
the suite's requests (it also sends some with Node's own http client, past any fetch hook)
goes unauthenticated or unchecked.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from pathlib import Path

import anyio
import pytest

from tests.conftest import ROOT
from tests.front.harness import running_gateway
from tests.front.mcp_clients import conformance, conformance_next
from tests.upstreams.helpers import http_upstream

pytestmark = pytest.mark.anyio

SCENARIO = re.compile(r"^[^\w\s]? ?([a-z0-9-]+): \d+ passed, (\d+) failed", re.MULTILINE)

CONFIG = f"""
auth:
  dev: true
  loopback_principal: {{user: suite, org: conformance}}
tags: {{dir: orgs}}
upstreams:
  conformance:
    transport: stdio
    command: {sys.executable}
    args: [-m, tests.servers.conformance, stdio]
    cwd: {ROOT}
    env: {{PYTHONPATH: {ROOT}}}
    prefix: ""
    call_timeout: 60
"""

ORG = """
users:
  suite: {roles: [tester]}
tags:
  - tag: tester
    kind: role
    payload:
      content: "You test the gateway."
      config:
        assigned_roles: [tester]
        allowed_tools: ["*"]
"""


async def test_every_active_server_scenario_passes_through_the_gateway(tmp_path: Path) -> None:
    suite = conformance()
    async with running_gateway(tmp_path, CONFIG, {"conformance": ORG}) as gateway:
        runs = tmp_path / "runs"
        runs.mkdir()
        with anyio.fail_after(600):
            done = await anyio.run_process(
                [*suite, "server", "--url", gateway.url, "--suite", "active"],
                cwd=runs,
                check=False,
            )
    output = done.stdout.decode() + done.stderr.decode()
    summary = output[output.rfind("=== SUMMARY ===") :]
    scenarios = dict(SCENARIO.findall(summary))
    failing = {name: count for name, count in scenarios.items() if count != "0"}
    assert not failing, f"failing scenarios (checks failed): {failing}\n{output[-6000:]}"
    # Every active scenario ran (30 in suite 0.1.16), and the suite agrees.
    assert len(scenarios) >= 30, summary
    assert re.search(r"Total: \d+ passed, 0 failed", summary), summary
    assert done.returncode == 0, output[-6000:]


TASKS = (
    "the tasks extension (SEP-2663, io.modelcontextprotocol/tasks) is not offered: the "
    "gateway neither advertises it nor serves tasks/*, and its upstream has none of the "
    "scenario's fixtures (greet, slow_compute, failing_job, ...)"
)
CALLER_CAPABILITIES = (
    "over stdio only: the SDK client the gateway calls such an upstream with stamps its own "
    "client capabilities (sampling and elicitation) on every request, with no way to send "
    "the 2026-07-28 caller's (the gateway's own POST over streamable HTTP sends the caller's), so "
)
ROOTS = (
    "by design: the scenario has its upstream ask the caller for roots, and roots come only "
    "from gateway.yaml (README: roots), never from callers, whose roots could widen what an "
    "upstream such as server-filesystem lets them reach"
)
EXPECTED_FAILURES: dict[str, dict[str, str]] = {
    "2025-11-25": {},
    "2026-07-28": {
        "server-stateless": CALLER_CAPABILITIES
        + "test_missing_capability runs for a caller that declared no sampling instead of "
        "answering -32021 with HTTP 400 (sep-2575-server-rejects-undeclared-capability, "
        "sep-2575-missing-capability-http-400)",
        "input-required-result-capability-check": CALLER_CAPABILITIES
        + "the upstream asks for elicitation a caller that declared only sampling cannot give",
        "input-required-result-basic-list-roots": ROOTS,
        "input-required-result-multiple-input-requests": ROOTS,
        "input-required-result-non-tool-request": "gateway defect: prompts/get does not pass "
        "an upstream's InputRequiredResult through (nor the retry's inputResponses and "
        "requestState back); the gateway's SDK client tries to answer it itself, on a "
        "session that cannot tell which caller to ask",
        **{
            f"tasks-{name}": TASKS
            for name in (
                "lifecycle",
                "capability-negotiation",
                "wire-fields",
                "request-state-removal",
                "mrtr-input",
                "request-headers",
                "dispatch-and-envelope",
                "required-task-error",
                "mrtr-composition",
            )
        },
    },
}
"""Scenarios of the 0.2 line that cannot pass through the gateway, and why. Strict: one that
starts passing fails the test, so that it is taken off the list."""

RESULTS_DIR = re.compile(r"^server-(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$")
RUNNING = re.compile(r"^Running requirements \S+ \((\d+) scenarios\)", re.MULTILINE)


def _scenario_checks(results: Path) -> dict[str, list[dict[str, object]]]:
    """The checks of each scenario the suite ran, from the checks.json it wrote per run."""
    found: dict[str, list[dict[str, object]]] = {}
    for path in sorted(results.glob("*/checks.json")):
        name = RESULTS_DIR.match(path.parent.name)
        assert name is not None, path
        found[name.group(1)] = json.loads(path.read_text(encoding="utf-8"))
    return found


OVER_HTTP = {
    # Over streamable HTTP a 2026-07-28 call is the gateway's own POST (exchange.py), which
    # tells the upstream the caller's capabilities; the SDK client, over stdio, stamps its own.
    name: reason
    for name, reason in EXPECTED_FAILURES["2026-07-28"].items()
    if not reason.startswith(CALLER_CAPABILITIES)
}


@pytest.mark.parametrize(
    ("revision", "transport"),
    [("2025-11-25", "stdio"), ("2026-07-28", "stdio"), ("2026-07-28", "streamable_http")],
)
async def test_every_scenario_of_a_revision_passes_or_is_listed(
    tmp_path: Path, revision: str, transport: str
) -> None:
    suite = conformance_next()
    results = tmp_path / "results"
    options = ["--requirements", revision, "-o", str(results)]
    with contextlib.ExitStack() as stack:
        config = CONFIG
        if transport == "streamable_http":
            server = http_upstream(
                lambda port: ["-m", "tests.servers.conformance", "http", str(port)]
            )
            url = stack.enter_context(server)
            config = CONFIG.split("upstreams:")[0] + (
                f"upstreams:\n  conformance:\n    transport: streamable_http\n    url: {url}\n"
                '    prefix: ""\n    call_timeout: 60\n'
            )
        output = await _run_suite(tmp_path, config, [*suite, "server", *options])
    ran = RUNNING.search(output)
    assert ran is not None, output[-6000:]
    scenarios = _scenario_checks(results)
    assert len(scenarios) == int(ran.group(1)), f"{sorted(scenarios)}\n{output[-6000:]}"

    # A warning (a SHOULD not met) counts as much as a failure.
    failing = {
        name: [
            f"{check['status']} {check['id']}: {check.get('errorMessage')}"
            for check in checks
            if check["status"] in ("FAILURE", "WARNING")
        ]
        for name, checks in scenarios.items()
    }
    failing = {name: problems for name, problems in failing.items() if problems}
    expected = OVER_HTTP if transport == "streamable_http" else EXPECTED_FAILURES[revision]
    unexpected = {name: problems for name, problems in failing.items() if name not in expected}
    assert not unexpected, f"failing scenarios: {json.dumps(unexpected, indent=2)}"
    passing = sorted(set(expected) - set(failing))
    assert not passing, f"listed as failing but passing now (take them off the list): {passing}"
    assert set(expected) <= set(scenarios), f"listed but not run: {set(expected) - set(scenarios)}"


async def _run_suite(tmp_path: Path, config: str, command: list[str]) -> str:
    """What the suite printed, run against a gateway with `config` (its exit code says
    nothing here: it fails for the listed scenarios too)."""
    async with running_gateway(tmp_path, config, {"conformance": ORG}) as gateway:
        with anyio.fail_after(180):
            done = await anyio.run_process(
                [*command, "--url", gateway.url], cwd=tmp_path, check=False
            )
    return done.stdout.decode() + done.stderr.decode()
