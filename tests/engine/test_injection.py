"""Injections planted in a hostile upstream's tool definitions (a description, a parameter
name, an enum value), obeyed by a model that does whatever it reads: the forbidden call
and the call out of scope are refused, the in-scope call after taint waits for the user.
None reaches the upstream (its ledger stays empty of them); each is audited, and the
session is told of each as refused or pending approval."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from gateway.audit import AuditLog
from gateway.calls import ToolService
from gateway.engine.loop import Engine
from gateway.engine.states import SessionState
from gateway.front.views import build_view
from gateway.principal import Principal
from gateway.state.base import DEFAULT_STREAM_MAX_LEN, Stream, TTLs
from gateway.state.memory import MemoryStore
from gateway.tags.loader import tagset_from_texts
from gateway.tags.resolve import resolve
from gateway.upstreams.config import StdioUpstream
from gateway.upstreams.pool import Pool
from tests.conftest import ROOT
from tests.engine.helpers import Gullible, tool

pytestmark = pytest.mark.anyio

TAGS = tagset_from_texts(
    {
        "acme.yaml": """
users:
  erin: {roles: [teller]}
tags:
  - tag: teller
    kind: role
    payload:
      config:
        assigned_roles: [teller]
        allowed_tools: ["hostile__*"]
        denied_tools: ["hostile__wipe"]
        scopes:
          hostile__transfer: {amount: {max: 100}}
      content: You move small sums.
"""
    }
)
ERIN = resolve(TAGS, Principal("erin", "acme"))


async def test_injections_in_tool_definitions_never_reach_the_upstream(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    upstream = StdioUpstream.model_validate(
        {
            "transport": "stdio",
            "command": sys.executable,
            "args": ["-m", "tests.engine.servers.hostile", str(ledger)],
            "cwd": str(ROOT),
            "env": {"PYTHONPATH": str(ROOT)},
        },
        strict=False,
    )
    pool = Pool({"hostile": upstream})
    audit = AuditLog(tmp_path / "audit.jsonl")
    planner = Gullible(tool("hostile__lookup"))  # a harmless call first: its result taints
    async with (
        MemoryStore(TTLs(), DEFAULT_STREAM_MAX_LEN) as store,
        anyio.create_task_group() as tasks,
    ):
        tasks.start_soon(pool.run)
        with anyio.fail_after(20):
            await pool.settled()
        engine = Engine(
            ToolService(pool, [audit.record_call]),
            store,
            lambda context: build_view(context, pool.catalog).tools,
            planner,
        )
        session = await engine.start(ERIN, "look it up")
        with anyio.fail_after(30):
            result = await engine.run(session)
        batch = await store.read(session.id, Stream.EVENTS, limit=1000)
        tasks.cancel_scope.cancel()
    audit.flush()

    assert planner.obeyed == [
        ("hostile__transfer", '{"amount": 5000}'),  # an enum value of filter's
        ("hostile__wipe", "{}"),  # a parameter name of index's
        ("hostile__transfer", '{"amount": 5}'),  # notes' description
    ]
    assert ledger.read_text().split() == ["lookup"], "no planted call reached the upstream"
    assert [(c.tool, c.decision) for c in result.calls] == [
        ("hostile__lookup", "allowed"),
        ("hostile__transfer", "out_of_scope"),
        ("hostile__wipe", "denied"),
    ]
    told = planner.told()
    assert told[1] == "hostile__transfer: refused: the arguments are outside what you may use"
    assert told[2] == "hostile__wipe: refused: no such tool is available to you"
    # The in-scope call, after the taint: held for the user, not run.
    assert result.state is SessionState.INPUT_REQUIRED
    assert result.text is not None
    assert result.text.startswith("May I run hostile__transfer")
    events = [event.data for event in batch.events]
    assert [e["tool"] for e in events if e["type"] == "tainted"] == ["hostile__lookup"]
    audited: list[dict[str, Any]] = [
        json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()
    ]
    assert [(a["tool"], a["decision"]) for a in audited if a.get("event") == "tool_call"] == [
        ("hostile__lookup", "allowed"),
        ("hostile__transfer", "out_of_scope"),
        ("hostile__wipe", "denied"),
        ("hostile__transfer", "held"),
    ]
