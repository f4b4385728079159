"""What the engine's tests share: a tag file, a caller, envelopes, a recording scripted
planner, and a bench of a real echo upstream, the call service and a state store."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio

from gateway.calls import Completed, ToolCall, ToolService
from gateway.engine.loop import Engine, SessionResult
from gateway.engine.planners.base import Answer, Planner, Told, Turn
from gateway.engine.planners.scripted import ScriptedPlanner
from gateway.front.views import build_view
from gateway.principal import Principal
from gateway.state.base import DEFAULT_STREAM_MAX_LEN, Stream, TTLs
from gateway.state.memory import MemoryStore
from gateway.tags.context import ResolvedContext
from gateway.tags.loader import tagset_from_texts
from gateway.tags.resolve import resolve
from gateway.upstreams.pool import Pool
from tests.upstreams.helpers import stdio, text

ACME = """
users:
  alice: {roles: [agent]}
tags:
  - tag: support
    kind: role
    payload:
      config:
        assigned_roles: [agent]
        allowed_tools: ["echo__echo", "echo__sleep", "echo__pid", "echo__crash", "echo__reject",
                        "echo__cancelled"]
        denied_tools: ["echo__crash"]
        scopes:
          echo__echo: {n: {max: 5}}
      content: You help customers.
"""
ALICE = resolve(tagset_from_texts({"acme.yaml": ACME}), Principal("alice", "acme"))


def envelope(kind: str, confidence: float = 0.9, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "confidence": confidence, "reasoning": "test", **fields}


def tool(name: str, **arguments: Any) -> dict[str, Any]:
    return envelope("tool", call={"tool": name, "arguments": json.dumps(arguments)})


def reply(text: str = "done") -> dict[str, Any]:
    return envelope("reply", text=text)


class Recording(ScriptedPlanner):
    """A scripted planner that keeps every turn it was given."""

    def __init__(self, envelopes: list[dict[str, Any]]) -> None:
        super().__init__(envelopes)
        self.turns: list[Turn] = []

    async def decide(self, turn: Turn) -> Answer:
        self.turns.append(turn)
        return await super().decide(turn)

    def told(self) -> list[str]:
        """What the engine told the model, in order."""
        last = self.turns[-1].transcript
        return [entry.text for entry in last if isinstance(entry, Told)]


@dataclass
class Bench:
    service: ToolService
    pool: Pool
    store: MemoryStore

    def engine(self, planner: Planner | None, **options: Any) -> Engine:
        budgets = options.pop("budgets", None)
        return Engine(
            self.service,
            self.store,
            lambda context: build_view(context, self.pool.catalog).tools,
            planner,
            budgets,
            **options,
        )

    async def session(
        self, planner: Planner | None, caller: ResolvedContext = ALICE, **options: Any
    ) -> SessionResult:
        engine = self.engine(planner, **options)
        session = await engine.start(caller, "please help")
        with anyio.fail_after(30):
            return await engine.run(session)

    async def events(self, session_id: str) -> list[dict[str, Any]]:
        batch = await self.store.read(session_id, Stream.EVENTS, limit=1000)
        return [event.data for event in batch.events]

    async def pid(self) -> str:
        outcome = await self.service.call(ALICE, ToolCall("echo__pid", {}))
        assert isinstance(outcome, Completed)
        return text(outcome.result)


@asynccontextmanager
async def running_bench() -> AsyncIterator[Bench]:
    pool = Pool({"echo": stdio(call_timeout=5)})
    async with (
        MemoryStore(TTLs(), DEFAULT_STREAM_MAX_LEN) as store,
        anyio.create_task_group() as tasks,
    ):
        tasks.start_soon(pool.run)
        with anyio.fail_after(20):
            await pool.settled()
        yield Bench(ToolService(pool), pool, store)
        tasks.cancel_scope.cancel()
