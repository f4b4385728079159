"""What the flow tests share: the ops upstream (servers/ops.py) on a bench of the engine's
tests (tests/engine/helpers.py), callers whose tags hold the flows a test writes, and
ways to run a flow session and read what the upstream received."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp_types as types
import yaml

from gateway.calls import Completed, ToolCall, ToolService
from gateway.engine.loop import SessionResult
from gateway.engine.planners.base import Planner
from gateway.principal import Principal
from gateway.state.base import DEFAULT_STREAM_MAX_LEN, TTLs
from gateway.state.memory import MemoryStore
from gateway.tags.context import ResolvedContext
from gateway.tags.loader import tagset_from_texts
from gateway.tags.resolve import resolve
from gateway.upstreams.pool import Pool
from tests.engine.helpers import Bench
from tests.upstreams.helpers import stdio

ROLE: dict[str, Any] = {
    "tag": "operator",
    "kind": "role",
    "payload": {
        "config": {
            "assigned_roles": ["agent"],
            "allowed_tools": ["ops__*"],
            "denied_tools": ["ops__secret"],
            "trusted_output": ["ops__*"],
        },
        "content": "You run operations.",
    },
}
"""Every ops tool but `secret`, their results trusted (no taint holds a planned call)."""


def flow_tag(
    name: str, content: dict[str, Any], users: Iterable[str] = ("alice",)
) -> dict[str, Any]:
    """A flow tag assigned to `users`."""
    return {
        "tag": name,
        "kind": "flow",
        "payload": {"config": {"assigned_users": list(users)}, "content": content},
    }


def org_text(*tags: dict[str, Any]) -> str:
    """acme.yaml: users alice and bob (both agents), the operator role, and `tags`."""
    data = {
        "users": {"alice": {"roles": ["agent"]}, "bob": {"roles": ["agent"]}},
        "tags": [ROLE, *tags],
    }
    return yaml.safe_dump(data, sort_keys=False)


def caller(*tags: dict[str, Any], user: str = "alice") -> ResolvedContext:
    """`user` of acme, whose org file holds the operator role and `tags` (flows, say)."""
    tagset = tagset_from_texts({"acme.yaml": org_text(*tags)})
    return resolve(tagset, Principal(user, "acme"))


@asynccontextmanager
async def running_ops() -> AsyncIterator[Bench]:
    """The ops upstream over stdio, the call service and a memory store; the upstream's
    process ends with the pool."""
    upstream = stdio(args=["-m", "tests.flows.servers.ops"], call_timeout=20)
    pool = Pool({"ops": upstream})
    async with (
        MemoryStore(TTLs(), DEFAULT_STREAM_MAX_LEN) as store,
        anyio.create_task_group() as tasks,
    ):
        tasks.start_soon(pool.run)
        with anyio.fail_after(20):
            await pool.settled()
        assert "ops__tally" in pool.catalog.tools
        yield Bench(ToolService(pool), pool, store)
        tasks.cancel_scope.cancel()


async def run_flow(
    bench: Bench,
    who: ResolvedContext,
    flow: str,
    inputs: dict[str, Any] | None = None,
    planner: Planner | None = None,
) -> SessionResult:
    """A session that runs `flow` for `who`, started and run to its end (bounded)."""
    engine = bench.engine(planner)
    session = await engine.start(who, "", flow=flow, inputs=inputs)
    with anyio.fail_after(30):
        return await engine.run(session)


async def tally(bench: Bench, who: ResolvedContext) -> dict[str, dict[str, int]]:
    """What the upstream received: calls by tool, attempts by flaky name."""
    with anyio.fail_after(10):
        outcome = await bench.service.call(who, ToolCall("ops__tally", {}))
    assert isinstance(outcome, Completed)
    assert isinstance(outcome.result, types.CallToolResult)
    structured = outcome.result.structured_content
    assert isinstance(structured, dict)
    return structured


def steps_status(state: dict[str, Any] | None) -> dict[str, str]:
    """A FLOW state's steps, each by its status."""
    assert state is not None
    return {step: record["status"] for step, record in state["steps"].items()}
