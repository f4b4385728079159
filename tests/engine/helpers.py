"""What the engine's tests share: a tag file, a caller, envelopes, a recording scripted
planner, and a bench of a real echo upstream, the call service and a state store."""

from __future__ import annotations

import json
import re
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
from gateway.state.base import DEFAULT_STREAM_MAX_LEN, StateStore, Stream, TTLs
from gateway.state.memory import MemoryStore
from gateway.tags.context import ResolvedContext
from gateway.tags.loader import tagset_from_texts
from gateway.tags.resolve import resolve
from gateway.upstreams.pool import Pool
from tests.upstreams.helpers import stdio, text

ACME = """
users:
  alice: {roles: [agent]}
  bob: {roles: [agent]}
tags:
  - tag: support
    kind: role
    payload:
      config:
        assigned_roles: [agent]
        allowed_tools: ["echo__echo", "echo__sleep", "echo__pid", "echo__crash", "echo__reject",
                        "echo__cancelled", "echo__pay", "echo__static"]
        denied_tools: ["echo__crash"]
        scopes:
          echo__echo: {n: {max: 5}}
      content: You help customers.
  - tag: trusts_echo
    kind: function
    payload:
      config:
        assigned_users: [alice]
        trusted_output: ["echo__*"]
"""
TAGS = tagset_from_texts({"acme.yaml": ACME})
ALICE = resolve(TAGS, Principal("alice", "acme"))
"""Trusts the echo upstream's results: her sessions are never tainted."""
BOB = resolve(TAGS, Principal("bob", "acme"))
"""The same tools, none of whose results is trusted."""


def strings(value: Any) -> list[str]:
    """Every string in a JSON value, keys included, depth first."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in (key, *strings(item))]
    if isinstance(value, list):
        return [text for item in value for text in strings(item)]
    return []


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
    store: StateStore

    def engine(self, planner: Planner | None, **options: Any) -> Engine:
        """An engine on the bench's store, or on `store` (another replica's, say)."""
        budgets = options.pop("budgets", None)
        store = options.pop("store", self.store)
        return Engine(
            self.service,
            store,
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


class Gullible(Planner):
    """A deterministic model that obeys: after its `first` envelopes, it calls whatever a
    `CALL <tool> <json>` it finds in what it was told (tool results) or in the tools'
    descriptions and schemas asks for, each once; when it finds none, it replies."""

    name = "gullible"
    PATTERN = re.compile(r"CALL ([\w.-]+) (\{[^{}]*\})")

    def __init__(self, *first: dict[str, Any]) -> None:
        self.first = list(first)
        self.obeyed: list[tuple[str, str]] = []
        self.turns: list[Turn] = []

    async def decide(self, turn: Turn) -> Answer:
        self.turns.append(turn)
        number = len(self.turns)
        if self.first:
            return Answer(f"gullible-{number}", self.first.pop(0))
        read = [entry.text for entry in turn.transcript if isinstance(entry, Told)]
        for shown in turn.tools:  # a description, and every name and value of its schema
            read += [shown.description, *strings(shown.input_schema)]
        for seen in read:
            for match in self.PATTERN.finditer(seen):
                found = (match.group(1), match.group(2))
                if found not in self.obeyed:
                    self.obeyed.append(found)
                    data = envelope("tool", call={"tool": found[0], "arguments": found[1]})
                    return Answer(f"gullible-{number}", data)
        return Answer(f"gullible-{number}", reply("nothing more to obey"))

    def told(self) -> list[str]:
        return [entry.text for entry in self.turns[-1].transcript if isinstance(entry, Told)]
