"""Roots are an upstream's configured setting: declared and answered only where
configured, never a caller's (an upstream may widen its file access to them)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import mcp_types as types
import pytest

from gateway.upstreams.config import HttpUpstream, StdioUpstream
from gateway.upstreams.connection import UpstreamConnection
from gateway.upstreams.requests import InputRound
from tests.conftest import ROOT
from tests.upstreams.helpers import config_errors, http_upstream, running, text

pytestmark = pytest.mark.anyio

ROOTS = ["/srv/docs", "file:///tmp/shared/"]
DECLARED = "file:///srv/docs\nfile:///tmp/shared"
FORGED = {"roots": types.ListRootsResult(roots=[types.Root(uri="file:///")])}


def roots_stdio(mode: str, **fields: object) -> StdioUpstream:
    base: dict[str, object] = {
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-m", "tests.upstreams.servers.roots", mode],
        "cwd": str(ROOT),
        "env": {"PYTHONPATH": str(ROOT)},
    }
    return StdioUpstream.model_validate({**base, **fields}, strict=False)


@contextmanager
def roots_http() -> Iterator[str]:
    with http_upstream(
        lambda port: ["-m", "tests.upstreams.servers.roots", "http", str(port)]
    ) as url:
        yield url


@pytest.mark.parametrize("mode", ["stdio", "stdio-handshake"])
async def test_roots_are_declared_and_answered_only_where_configured(mode: str) -> None:
    async with running(UpstreamConnection("files", roots_stdio(mode, roots=ROOTS))) as up:
        with anyio.fail_after(15):
            await up.wait_ready()
        assert [tool.name for tool in up.tools] == ["open", "rooted"]
        assert text(await up.call_tool("rooted", {})) == DECLARED
    async with running(UpstreamConnection("files", roots_stdio(mode))) as up:
        with anyio.fail_after(15):
            await up.wait_ready()
        assert [tool.name for tool in up.tools] == ["open"]
        assert text(await up.call_tool("rooted", {})) == "no roots declared"


async def test_a_2026_callers_round_never_carries_roots_either_way() -> None:
    async with running(UpstreamConnection("files", roots_stdio("stdio", roots=ROOTS))) as up:
        with anyio.fail_after(15):
            await up.wait_ready()
        # The upstream's roots question is the gateway's to answer, not the caller's.
        assert text(await up.call_tool("rooted", {}, input_round=InputRound())) == DECLARED
        # A caller's own roots answer (it was never asked one) does not reach the upstream.
        forged = InputRound(FORGED, "r")  # type: ignore[arg-type]
        assert text(await up.call_tool("rooted", {}, input_round=forged)) == DECLARED
        # Asked roots and a model's answer at once: the caller sees only its own question,
        # and its retry is completed with the roots.
        asked = await up.call_tool("rooted", {"sample": True}, input_round=InputRound())
        assert isinstance(asked, types.InputRequiredResult)
        assert list(asked.input_requests or {}) == ["llm"]
        said = types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="x"), model="m"
        )
        again = InputRound({"llm": said, **FORGED}, asked.request_state)
        assert text(await up.call_tool("rooted", {"sample": True}, input_round=again)) == DECLARED


async def test_an_http_upstreams_direct_calls_declare_the_configured_roots() -> None:
    with roots_http() as url:
        upstream = HttpUpstream.model_validate(
            {"transport": "streamable_http", "url": url, "roots": ROOTS}, strict=False
        )
        async with running(UpstreamConnection("files", upstream)) as up:
            with anyio.fail_after(15):
                await up.wait_ready()
            assert up.calls_direct
            assert [tool.name for tool in up.tools] == ["open", "rooted"]
            assert text(await up.call_tool("rooted", {}, input_round=InputRound())) == DECLARED


def test_roots_must_be_absolute_paths_or_local_file_uris(tmp_path: Path) -> None:
    found = config_errors(
        tmp_path,
        """
upstreams:
  a: {transport: stdio, command: x, roots: [docs]}
  b: {transport: stdio, command: x, roots: ["https://example.com/x"]}
  c: {transport: stdio, command: x, roots: ["file://fileserver/share"]}
  d: {transport: stdio, command: x, roots: [/srv/docs, "file:///srv/docs/"]}
  e: {transport: stdio, command: x, roots: /srv/docs}
""",
    )
    assert len(found) == 5
    assert "root 'docs': expected an absolute path or a file:// URI" in found[0]
    assert "root 'https://example.com/x': expected an absolute path or a file:// URI" in found[1]
    assert "expected file:///absolute/path (no host, query)" in found[2]
    assert "root file:///srv/docs is listed twice" in found[3]
    assert "roots" in found[4]
