"""The official MCP conformance suite (server scenarios) against the gateway, fronting the
project's conformance upstream (tests/servers/conformance.py) with an empty prefix.

Authentication stays on: the suite cannot send a header, so the gateway's test-only
`auth.loopback_principal` (allowed in dev configs only) maps its credential-less loopback
requests to one principal, whose tags grant every tool.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import anyio
import pytest

from tests.conftest import ROOT
from tests.front.harness import running_gateway
from tests.front.mcp_clients import conformance

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
