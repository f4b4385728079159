"""A real third-party upstream: the reference `server-everything` from the npm registry
(installed by scripts/ensure-upstreams), a handshake-era server written in TypeScript."""

from __future__ import annotations

import shutil

import anyio
import pytest

from gateway.upstreams.config import StdioUpstream
from gateway.upstreams.connection import UpstreamConnection
from gateway.upstreams.status import State
from tests.upstreams.helpers import EVERYTHING, running, text

pytestmark = pytest.mark.anyio


@pytest.fixture
def everything() -> StdioUpstream:
    node = shutil.which("node")
    if node is None or not (EVERYTHING / "dist/index.js").is_file():
        pytest.skip("node or server-everything missing (scripts/ensure-upstreams installs it)")
    return StdioUpstream.model_validate(
        {
            "transport": "stdio",
            "command": node,
            "args": [str(EVERYTHING / "dist/index.js"), "stdio"],
        },
        strict=False,
    )


async def test_server_everything_lists_and_calls(everything: StdioUpstream) -> None:
    async with running(UpstreamConnection("everything", everything)) as up:
        with anyio.fail_after(30):
            await up.wait_ready()
        assert up.status.state is State.READY
        names = {tool.name for tool in up.tools}
        assert {"echo", "get-sum", "get-structured-content"} <= names
        assert text(await up.call_tool("echo", {"message": "héllo"})) == "Echo: héllo"
        assert (
            text(await up.call_tool("get-sum", {"a": 2, "b": 40})) == "The sum of 2 and 40 is 42."
        )
        structured = await up.call_tool("get-structured-content", {"location": "New York"})
        assert structured.structured_content is not None
        assert structured.is_error is not True


async def test_server_everything_offers_its_roots_tool_only_with_configured_roots(
    everything: StdioUpstream,
) -> None:
    async with running(UpstreamConnection("everything", everything)) as up:
        with anyio.fail_after(30):
            await up.wait_ready()
        assert "get-roots-list" not in {tool.name for tool in up.tools}
    rooted = everything.model_copy(update={"roots": ("file:///srv/docs",)})
    async with running(UpstreamConnection("everything", rooted)) as up:
        with anyio.fail_after(30):
            await up.wait_ready()
        assert "get-roots-list" in {tool.name for tool in up.tools}
        listed = text(await up.call_tool("get-roots-list", {}))
        assert "URI: file:///srv/docs" in listed
        assert "(1 total)" in listed
