"""Injections planted in a hostile upstream's tool definitions (a description, a parameter
name, an enum value), obeyed by a model that does whatever it reads: the forbidden call
and the call out of scope are refused, the in-scope call after taint waits for the user.
None reaches the upstream (its ledger stays empty of them); each is audited, and the
session is told of each as refused or pending approval."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from gateway.audit import AuditLog
from gateway.calls import ToolService
from gateway.engine.loop import Engine, SessionResult
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


@dataclass
class Outcome:
    result: SessionResult
    events: list[dict[str, Any]]
    audited: list[tuple[str, str]]
    reached: list[str]
    """The calls that reached the hostile upstream, by its ledger."""


async def session(tmp_path: Path, planner: Gullible, **options: Any) -> Outcome:
    """One session of `planner` as Erin, against the hostile upstream."""
    await anyio.Path(tmp_path).mkdir(parents=True, exist_ok=True)
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
            **options,
        )
        started = await engine.start(ERIN, "look it up")
        with anyio.fail_after(30):
            result = await engine.run(started)
        batch = await store.read(started.id, Stream.EVENTS, limit=1000)
        tasks.cancel_scope.cancel()
    audit.flush()
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    audited = [json.loads(line) for line in lines]
    return Outcome(
        result,
        [event.data for event in batch.events],
        [(a["tool"], a["decision"]) for a in audited if a.get("event") == "tool_call"],
        ledger.read_text().split() if ledger.exists() else [],
    )


async def test_injections_in_tool_definitions_never_reach_the_upstream(tmp_path: Path) -> None:
    planner = Gullible(tool("hostile__lookup"))  # a harmless call first: its result taints
    outcome = await session(tmp_path, planner)
    result = outcome.result
    assert planner.obeyed == [
        ("hostile__transfer", '{"amount": 5000}'),  # an enum value of filter's
        ("hostile__wipe", "{}"),  # a parameter name of index's
        ("hostile__transfer", '{"amount": 5}'),  # notes' description
    ]
    assert outcome.reached == ["lookup"], "no planted call reached the upstream"
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
    assert [e["tool"] for e in outcome.events if e["type"] == "tainted"] == ["hostile__lookup"]
    assert outcome.audited == [
        ("hostile__lookup", "allowed"),
        ("hostile__transfer", "out_of_scope"),
        ("hostile__wipe", "denied"),
        ("hostile__transfer", "held"),
    ]


async def test_definitions_taint_a_session_from_its_start_when_configured(
    tmp_path: Path,
) -> None:
    """Obeyed on a clean first turn, a description's in-scope call runs: only results
    taint, by default. With taint_definitions, the untrusted definitions taint the session
    before the model reads them, and the call waits for the user."""
    clean = await session(tmp_path / "clean", Gullible())
    assert "transfer" in clean.reached, "the default lets it through"
    strict = await session(tmp_path / "strict", Gullible(), taint_definitions=True)
    assert strict.reached == [], "nothing planted reached the upstream"
    assert strict.result.state is SessionState.INPUT_REQUIRED
    assert (strict.result.text or "").startswith("May I run hostile__transfer")
    tainted = [e for e in strict.events if e["type"] == "tainted"]
    assert len(tainted) == 1
    assert "hostile__notes" in tainted[0]["definitions"]
    assert strict.audited[-1] == ("hostile__transfer", "held")
