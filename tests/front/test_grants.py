"""Tags granting resources and prompts beyond the tool-derived default, and asking for
arguments in full in the audit log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import MCPError

from tests.front.harness import ACME, GLOBEX, running_gateway

pytestmark = pytest.mark.anyio

GLOBEX_WITH_GRANTS = GLOBEX.replace(
    'allowed_tools: ["tiny__*"]',
    'allowed_tools: ["tiny__*"]\n        allowed_resources: ["echo://static"]\n'
    '        allowed_prompts: ["echo__*"]',
)
ACME_AUDITED = ACME.replace(
    '        denied_tools: ["echo__crash"]',
    '        denied_tools: ["echo__crash"]\n        audit_arguments: true',
)
assert ACME_AUDITED != ACME
assert GLOBEX_WITH_GRANTS != GLOBEX


async def test_tags_grant_resources_and_prompts_and_full_audit(tmp_path: Path) -> None:
    orgs = {"acme": ACME_AUDITED, "globex": GLOBEX_WITH_GRANTS}
    async with running_gateway(tmp_path, orgs=orgs) as gateway:
        async with gateway.client("carol") as carol:
            # No echo tool, but echo://static and echo's prompts by grant; not the template.
            resources = [r.uri for r in (await carol.list_resources()).resources]
            assert resources == ["gateway://context", "echo://static"]
            assert (await carol.list_resource_templates()).resource_templates == []
            prompts = [p.name for p in (await carol.list_prompts()).prompts]
            assert prompts == ["context", "echo__greet"]
            assert (await carol.read_resource("echo://static")).contents
            with pytest.raises(MCPError):
                await carol.read_resource("echo://items/1")
            greeting = await carol.get_prompt("echo__greet", {"name": "Cy"})
            assert greeting.messages
        async with gateway.client("alice") as alice:
            await alice.list_tools()
            await alice.call_tool("echo__echo", {"n": 2, "note": "kept"})
        async with gateway.client("bob") as bob:
            await bob.list_tools()
            await bob.call_tool("echo__pid", {"note": "hashed"})
    events = gateway.app.state.runtime.audit.read()
    calls = {e["user"]: e for e in events if e["event"] == "tool_call"}
    assert calls["alice"]["arguments"] == {"n": 2, "note": "kept"}  # support audits in full
    assert "arguments" not in calls["bob"]
    assert "hashed" not in json.dumps(events)
