"""A 2026-07-28 upstream whose listen stream does not start as expected is still listed,
polled for changes instead, and says why in its status."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from gateway.cli import main
from gateway.upstreams import connection as connection_module
from gateway.upstreams import subscriptions as subscriptions_module
from gateway.upstreams.config import HttpUpstream
from gateway.upstreams.connection import UpstreamConnection
from gateway.upstreams.status import State
from tests.helpers import until
from tests.upstreams.helpers import http_upstream, running

pytestmark = pytest.mark.anyio


@contextmanager
def misanswering_upstream(mode: str) -> Iterator[str]:
    with http_upstream(
        lambda port: ["-m", "tests.upstreams.servers.listen", str(port), mode]
    ) as url:
        yield url


@pytest.mark.parametrize(
    ("mode", "why"),
    [
        ("lines", "not acknowledged within"),
        ("never", "not acknowledged within"),
        ("error", "Method not found"),
    ],
)
async def test_a_listen_stream_that_does_not_start_keeps_nothing_down(
    mode: str, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection_module, "POLL_INTERVAL", 0.2)
    with misanswering_upstream(mode) as url:
        upstream = HttpUpstream.model_validate(
            {"transport": "streamable_http", "url": url, "init_timeout": 3}
        )
        async with running(UpstreamConnection("newer", upstream)) as up:
            with anyio.fail_after(15):
                await up.wait_ready()
            assert [tool.name for tool in up.tools] == ["t", "add"]
            assert up.status.state is State.READY
            (note,) = up.notes
            assert note.startswith("no change announcements (subscriptions/listen: ")
            assert why in note
            assert note.endswith("); its listings are polled")
            # Nothing announces the new tool: a poll finds it.
            await up.call_tool("add", {})
            await until(lambda: "added" in [tool.name for tool in up.tools], 10)


@pytest.mark.parametrize("mode", ["lines", "error"])
async def test_a_resource_listen_stream_that_does_not_start_is_reported(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subscriptions_module, "LISTEN_ACK_TIMEOUT", 0.5)
    with misanswering_upstream(mode) as url:
        upstream = HttpUpstream.model_validate({"transport": "streamable_http", "url": url})
        async with running(UpstreamConnection("newer", upstream)) as up:
            with anyio.fail_after(15):
                await up.wait_ready()
            await up.subscriptions.add("listen://thing")
            await until(lambda: len(up.notes) == 2, 10)
            assert up.notes[1].startswith("resource listen://thing not followed (")
            assert up.status.state is State.READY
            await up.subscriptions.remove("listen://thing")
            assert len(up.notes) == 1


def test_the_status_command_says_why_an_upstream_is_polled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with misanswering_upstream("lines") as url:
        config = tmp_path / "gateway.yaml"
        config.write_text(
            f"upstreams:\n  newer: {{transport: streamable_http, url: '{url}', init_timeout: 3}}\n"
        )
        assert main(["upstreams", "status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "newer" in out
    assert " ready " in out
    assert (
        "note: no change announcements (subscriptions/listen: not acknowledged within 1 s); "
        "its listings are polled"
    ) in out
