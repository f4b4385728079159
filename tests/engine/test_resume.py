"""A session whose engine stopped mid-call is resumed from its stream by another engine on
the same store: a call with a result is told as it was, a read-only call of unknown outcome
is sent again under the same idempotency key, and a call that is not safe to repeat waits
for the user (approve sends it again, reject goes on without it).

The engine that stops is cut off from its store first (every write fails, as a process
that died writes nothing more) and then cancelled; its claim lapses after one lease.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from gateway.calls import ToolService
from gateway.engine.loop import Engine
from gateway.engine.recovery import Recovery
from gateway.engine.states import SessionState
from gateway.errors import StateUnavailable
from gateway.front.views import build_view
from gateway.principal import Principal
from gateway.state.base import DEFAULT_STREAM_MAX_LEN, Stream, TTLs
from gateway.state.memory import MemoryStore
from gateway.tags.loader import tagset_from_texts
from gateway.tags.resolve import resolve
from gateway.upstreams.config import StdioUpstream
from gateway.upstreams.pool import Pool
from tests.conftest import ROOT
from tests.engine.helpers import Recording, envelope, reply

pytestmark = pytest.mark.anyio

LEASE = 1.0
CLERK = """
users:
  carol: {roles: [clerk]}
  dan: {roles: [clerk, careful]}
tags:
  - tag: clerk
    kind: role
    payload:
      config:
        assigned_roles: [clerk]
        allowed_tools: ["ledger__*"]
        trusted_output: ["ledger__*"]
      content: You keep the books.
  - tag: careful
    kind: role
    payload:
      config:
        assigned_roles: [careful]
        needs_approval: ["ledger__write"]
"""
"""Carol keeps the ledger upstream's books, its results trusted (no taint holds a call);
Dan too, but his writes wait for his approval."""
TAGS = tagset_from_texts({"acme.yaml": CLERK})
CAROL = Principal("carol", "acme")
DAN = Principal("dan", "acme")


def call(tool: str, what: str) -> dict[str, Any]:
    return {"tool": f"ledger__{tool}", "arguments": json.dumps({"what": what})}


class Freezable(MemoryStore):
    """A memory store that can be cut off: every write then fails, as the store of a
    process that died would see nothing more from it."""

    frozen = False

    def _check(self) -> None:
        if self.frozen:
            raise StateUnavailable("memory://", "cut off")

    async def append(self, session_id: str, stream: Stream, event: Mapping[str, Any]) -> str:
        self._check()
        return await super().append(session_id, stream, event)

    async def append_many(
        self, session_id: str, stream: Stream, events: Sequence[Mapping[str, Any]]
    ) -> list[str]:
        self._check()
        return await super().append_many(session_id, stream, events)

    async def append_claimed(
        self, session_id: str, stream: Stream, event: Mapping[str, Any], owner: str
    ) -> str | None:
        self._check()
        return await super().append_claimed(session_id, stream, event, owner)

    async def set_claimed_session_state(
        self, session_id: str, state: Mapping[str, Any], owner: str, ttl: float | None = None
    ) -> bool:
        self._check()
        return await super().set_claimed_session_state(session_id, state, owner, ttl)

    async def claim_session(self, session_id: str, owner: str, seconds: float) -> bool:
        self._check()
        return await super().claim_session(session_id, owner, seconds)

    async def release_session(self, session_id: str, owner: str) -> None:
        self._check()
        await super().release_session(session_id, owner)


@dataclass
class Books:
    store: Freezable
    service: ToolService
    pool: Pool
    ledger: Path
    gates: Path

    def engine(self, script: list[dict[str, Any]]) -> tuple[Engine, Recording]:
        planner = Recording(script)
        engine = Engine(
            self.service,
            self.store,
            lambda context: build_view(context, self.pool.catalog).tools,
            planner,
            lease=LEASE,
        )
        return engine, planner

    def lines(self) -> list[list[str]]:
        text = self.ledger.read_text() if self.ledger.exists() else ""
        return [line.split(" ") for line in text.splitlines()]

    def shut(self, tool: str) -> None:
        (self.gates / tool).touch()

    def open(self, tool: str) -> None:
        (self.gates / tool).unlink()

    async def crash(
        self,
        engine: Engine,
        script: list[dict[str, Any]],
        until: str,
        act: Callable[[], Awaitable[Any]] | None = None,
    ) -> str:
        """Run a session on `engine` (or `act`, going on with one) until the ledger shows
        a `until` call, then stop the engine as a crash would; the session's id."""
        ids: list[str] = []

        async def run() -> None:
            if act is not None:
                ids.append((await act()).session_id)
                return
            session = await engine.start(resolve(TAGS, CAROL), "keep the books")
            ids.append(session.id)
            await engine.run(session)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(run)
                for _ in range(1500):
                    if any(line[0] == until for line in self.lines()):
                        break
                    await anyio.sleep(0.02)
                else:
                    pytest.fail(f"no {until} call reached the ledger")
                self.store.frozen = True
                tasks.cancel_scope.cancel()
        self.store.frozen = False
        return ids[0] if ids else ""

    async def crashed_mid_read(self) -> str:
        """A session of READ whose engine stopped while its read was under way (the read
        may go on once the gateway is back); its id."""
        self.shut("read")
        first, _ = self.engine(READ)
        session_id = await self.crash(first, READ, until="read")
        self.open("read")
        return session_id

    async def resumed(self, engine: Engine, session_id: str) -> dict[str, Any]:
        """Sweep for sessions to resume with `engine` until it takes `session_id` up (once
        the dead engine's claim lapsed), and wait for the session to stop running."""
        recovery = Recovery(engine, lambda principal, intent: resolve(TAGS, principal, intent))
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tasks:
                for _ in range(300):
                    await recovery.sweep(tasks)
                    await anyio.sleep(0.1)
                    snapshot = await self.store.get_session_state(session_id)
                    assert snapshot is not None
                    if snapshot["state"] not in ("working", "submitted"):
                        return snapshot
                pytest.fail("the session was never resumed")
        raise AssertionError("unreachable")

    async def events(self, session_id: str) -> list[dict[str, Any]]:
        batch = await self.store.read(session_id, Stream.EVENTS, limit=1000)
        return [event.data for event in batch.events]


@asynccontextmanager
async def books(tmp_path: Path) -> AsyncIterator[Books]:
    ledger, gates = tmp_path / "ledger", tmp_path / "gates"
    gates.mkdir()
    upstream = StdioUpstream.model_validate(
        {
            "transport": "stdio",
            "command": sys.executable,
            "args": ["-m", "tests.engine.servers.ledger", str(ledger), str(gates)],
            "cwd": str(ROOT),
            "env": {"PYTHONPATH": str(ROOT)},
            "call_timeout": 30,
        },
        strict=False,
    )
    pool = Pool({"ledger": upstream})
    async with (
        Freezable(TTLs(), DEFAULT_STREAM_MAX_LEN) as store,
        anyio.create_task_group() as tasks,
    ):
        tasks.start_soon(pool.run)
        with anyio.fail_after(20):
            await pool.settled()
        yield Books(store, ToolService(pool), pool, ledger, gates)
        tasks.cancel_scope.cancel()


READ = [envelope("tool", call=call("read", "a")), reply("read")]
BOTH = [
    envelope("tools", mode="sequential", calls=[call("read", "a"), call("write", "b")]),
    reply("booked"),
]


async def test_a_call_not_safe_to_repeat_waits_for_the_user_then_goes_again(
    tmp_path: Path,
) -> None:
    async with books(tmp_path) as bench:
        bench.shut("write")
        first, _ = bench.engine(BOTH)
        session_id = await bench.crash(first, BOTH, until="write")
        second, planner = bench.engine(BOTH)
        snapshot = await bench.resumed(second, session_id)
        assert snapshot["state"] == "input_required"
        assert snapshot["waiting"] == "approval"
        held = snapshot["approval"]["calls"]
        assert [(c["tool"], c["index"]) for c in held] == [("ledger__write", 1)]
        assert "outcome is unknown" in held[0]["why"]
        assert "ledger__write ran" in snapshot["outcome"]
        assert [line[0] for line in bench.lines()] == ["read", "write"], "one attempt each"
        assert planner.turns == [], "the model is not asked again for the turn it gave"

        bench.open("write")
        session = await second.load(session_id, resolve(TAGS, CAROL))
        with anyio.fail_after(30):
            result = await second.approve(session, "approve")
        assert (result.state, result.text) == (SessionState.COMPLETED, "booked")
        lines = bench.lines()
        assert [line[0] for line in lines] == ["read", "write", "write"], "read not sent again"
        assert lines[1][2] == lines[2][2] == f"{session_id}:1.1", "the same idempotency key"
        assert [(c.tool, c.ok) for c in result.calls] == [
            ("ledger__read", True),
            ("ledger__write", True),
        ]
        assert result.spent["turns"] == 2
        assert result.spent["tool_calls"] == 2
        told = planner.told()[-1]
        assert "read a: done" in told, "the read's result, as it was, from the stream"
        assert "write b: done" in told
        events = await bench.events(session_id)
        assert [e["type"] for e in events].count("envelope") == 2


async def test_rejected_the_call_of_unknown_outcome_is_not_sent_again(tmp_path: Path) -> None:
    async with books(tmp_path) as bench:
        bench.shut("write")
        first, _ = bench.engine(BOTH)
        session_id = await bench.crash(first, BOTH, until="write")
        second, planner = bench.engine(BOTH)
        await bench.resumed(second, session_id)
        bench.open("write")
        session = await second.load(session_id, resolve(TAGS, CAROL))
        with pytest.raises(Exception, match="sent again as it was, or not at all"):
            await second.approve(session, "edit", arguments={1: {"what": "c"}})
        with anyio.fail_after(30):
            result = await second.approve(session, "reject", "leave it")
        assert result.state is SessionState.COMPLETED
        assert [line[0] for line in bench.lines()] == ["read", "write"]
        assert [(c.tool, c.decision, c.ok) for c in result.calls] == [
            ("ledger__read", "allowed", True),
            ("ledger__write", "outcome_unknown", False),
        ]
        assert "the user chose not to send it again" in planner.told()[-1]


async def test_a_read_only_call_of_unknown_outcome_is_sent_again(tmp_path: Path) -> None:
    async with books(tmp_path) as bench:
        session_id = await bench.crashed_mid_read()
        second, planner = bench.engine(READ)
        snapshot = await bench.resumed(second, session_id)
        assert (snapshot["state"], snapshot["outcome"]) == ("completed", "read")
        lines = bench.lines()
        assert [line[0] for line in lines] == ["read", "read"]
        assert lines[0][2] == lines[1][2] == f"{session_id}:1.0"
        assert len(planner.turns) == 1, "asked for the reply only"
        events = await bench.events(session_id)
        assert "resumed" in [e["type"] for e in events]


async def test_an_edited_call_of_unknown_outcome_is_sent_again_as_edited(tmp_path: Path) -> None:
    """The user edited the held write before it ran; the gateway stopped while it ran;
    approved again after the resume, it goes out as the user edited it, never as the
    model wrote it."""
    script = [envelope("tool", call=call("write", "evil")), reply("written")]
    async with books(tmp_path) as bench:
        first, _ = bench.engine(script)
        dan = resolve(TAGS, DAN)
        session = await first.start(dan, "write it")
        with anyio.fail_after(30):
            held = await first.run(session)
        assert held.waiting == "approval"
        bench.shut("write")

        async def approve_edited() -> Any:
            waiting = await first.load(session.id, dan)
            return await first.approve(waiting, "edit", arguments={0: {"what": "good"}})

        await bench.crash(first, script, until="write", act=approve_edited)
        bench.open("write")
        second, _ = bench.engine(script)
        snapshot = await bench.resumed(second, session.id)
        assert snapshot["approval"]["calls"][0]["arguments"] == {"what": "good"}
        with anyio.fail_after(30):
            result = await second.approve(await second.load(session.id, dan), "approve")
        assert result.state is SessionState.COMPLETED
        assert [line[:2] for line in bench.lines()] == [["write", "good"], ["write", "good"]]
        assert bench.lines()[0][2] == bench.lines()[1][2] == f"{session.id}:1.0"


async def test_a_caller_asking_after_a_stopped_session_picks_it_up(tmp_path: Path) -> None:
    """No sweep needed: Engine.pick_up (run_session with only the session's id, for a
    caller whose own model plans) resumes a session that no engine holds, in that call."""
    async with books(tmp_path) as bench:
        session_id = await bench.crashed_mid_read()
        await anyio.sleep(LEASE + 0.2)  # the stopped engine's claim lapses
        second, _ = bench.engine(READ)
        with anyio.fail_after(30):
            result = await second.pick_up(await second.load(session_id, resolve(TAGS, CAROL)))
        assert (result.state, result.text) == (SessionState.COMPLETED, "read")


async def test_a_session_cancelled_by_the_shutdown_is_left_to_resume(tmp_path: Path) -> None:
    async with books(tmp_path) as bench:
        bench.shut("read")
        first, _ = bench.engine(READ)
        session = await first.start(resolve(TAGS, CAROL), "read it")
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(first.run, session)
                for _ in range(1500):
                    if bench.lines():
                        break
                    await anyio.sleep(0.02)
                first.stop()
                tasks.cancel_scope.cancel()
        snapshot = await bench.store.get_session_state(session.id)
        assert snapshot is not None
        assert snapshot["state"] == "working", "not recorded as canceled"
        assert await bench.store.claim_session(session.id, "next-replica", 1), "let go"


async def test_the_sweep_passes_over_what_it_cannot_resume(tmp_path: Path) -> None:
    """A damaged snapshot is that session's problem alone; and an engine without a planner
    of its own (each caller's, by sampling) resumes nothing."""
    async with books(tmp_path) as bench:
        session_id = await bench.crashed_mid_read()
        await bench.store.set_session_state("s_damaged", {"state": "working"})  # no user
        await anyio.sleep(LEASE + 0.2)
        planless = Engine(bench.service, bench.store, lambda context: [], None, lease=LEASE)
        resolving = Recovery(planless, lambda principal, intent: resolve(TAGS, principal, intent))
        async with anyio.create_task_group() as tasks:
            assert await resolving.sweep(tasks) == 0
        second, _ = bench.engine(READ)
        recovery = Recovery(second, lambda principal, intent: resolve(TAGS, principal, intent))
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tasks:
                assert await recovery.sweep(tasks) == 1  # the damaged one passed over
        snapshot = await bench.store.get_session_state(session_id)
        assert snapshot is not None
        assert snapshot["state"] == "completed"
