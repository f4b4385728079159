"""An upstream's questions during a call (sampling, elicitation) reach the caller whose
call it is, in both protocol eras, and no one else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import MCPError
from mcp.client.session import ClientRequestContext

from tests.front.harness import Gateway, gateway_yaml, running_gateway
from tests.front.helpers import MODES, model
from tests.upstreams.helpers import text

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("mode", MODES)
async def test_sampling_reaches_the_caller_whose_call_it_is(gateway: Gateway, mode: str) -> None:
    results: dict[str, str] = {}
    async with (
        gateway.client("alice", mode, sampling_callback=model("first")) as first,
        gateway.client("alice", mode, sampling_callback=model("second")) as second,
    ):
        await first.list_tools()
        await second.list_tools()

        async def ask(name: str, client: object, prompt: str) -> None:
            result = await client.call_tool("echo__ask", {"prompt": prompt})  # type: ignore[attr-defined]
            results[name] = text(result)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(ask, "first", first, "one")
            tasks.start_soon(ask, "second", second, "two")
    assert results == {
        "first": "model said: first heard 'one'",
        "second": "model said: second heard 'two'",
    }


async def test_a_caller_without_sampling_is_not_asked(gateway: Gateway) -> None:
    async with gateway.client("alice", "legacy") as alice:
        await alice.list_tools()
        with pytest.raises(MCPError, match="the client does not support sampling"):
            await alice.call_tool("echo__ask", {"prompt": "hi"})


@pytest.mark.parametrize("mode", MODES)
async def test_elicitation_reaches_the_caller(gateway: Gateway, mode: str) -> None:
    async def answer(
        _ctx: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestFormParams)
        assert params.message == "Sure?"
        return types.ElicitResult(action="accept", content={"ok": True})

    async with gateway.client("alice", mode, elicitation_callback=answer) as alice:
        await alice.list_tools()
        result = await alice.call_tool("echo__confirm", {})
    assert text(result) == "accept {'ok': True}"


async def test_through_a_handshake_upstream_each_caller_is_asked_and_told_alone(
    tmp_path: Path,
) -> None:
    """An SDK 1.x-like upstream over stdio cannot say whose its messages are: callers whose
    calls overlap get sessions of their own, and each gets its own questions and logs."""
    config = gateway_yaml().replace("echo, stdio]", "echo, stdio-handshake]")
    results: dict[str, str] = {}
    logs: dict[str, list[object]] = {"first": [], "second": []}

    def log_to(name: str) -> object:
        async def on_log(params: types.LoggingMessageNotificationParams) -> None:
            logs[name].append(params.data)

        return on_log

    async with (
        running_gateway(tmp_path, config) as gateway,
        gateway.client("alice", "legacy", sampling_callback=model("first")) as first,
        gateway.client("alice", "legacy", sampling_callback=model("second")) as second,
        gateway.client("alice", "auto", logging_callback=log_to("first"), log_level="info") as bob,
        gateway.client("alice", "auto", logging_callback=log_to("second"), log_level="info") as ben,
    ):
        for client in (first, second, bob, ben):
            await client.list_tools()

        async def ask(name: str, client: Any, prompt: str) -> None:
            results[name] = text(await client.call_tool("echo__ask", {"prompt": prompt}))

        async def sleep(client: Any) -> None:
            await client.call_tool("echo__sleep", {"seconds": 0.3})

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(ask, "first", first, "one")
            tasks.start_soon(ask, "second", second, "two")
            tasks.start_soon(sleep, bob)
            tasks.start_soon(sleep, ben)
        pool = gateway.app.state.pool
        assert pool.connections["echo"].caller_sessions >= 3
    assert results == {
        "first": "model said: first heard 'one'",
        "second": "model said: second heard 'two'",
    }
    assert logs == {name: [{"step": n} for n in (1, 2, 3)] for name in ("first", "second")}
