"""The pool over several real upstreams, and the catalog's namespacing and clashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import mcp_types as types
import pytest

from gateway.cli import main
from gateway.errors import UnknownTool, UpstreamError
from gateway.upstreams.catalog import Catalog, build
from gateway.upstreams.listing import Offer
from gateway.upstreams.pool import Pool
from gateway.upstreams.status import State, Status
from tests.conftest import ROOT
from tests.helpers import get_json, gone, serving, until
from tests.redis_server import free_port
from tests.upstreams.calling import call
from tests.upstreams.helpers import ECHO_TOOLS, stdio, text

pytestmark = pytest.mark.anyio


def tool(name: str) -> types.Tool:
    return types.Tool(name=name, input_schema={"type": "object"})


def test_public_names_are_prefixed_and_sorted() -> None:
    catalog = build(
        3,
        {
            "crm": ("crm__", Offer(tools=(tool("get"), tool("list")))),
            "time": ("", Offer(tools=(tool("now"),))),
        },
    )
    assert catalog.version == 3
    assert list(catalog.tools) == ["crm__get", "crm__list", "now"]
    assert (catalog.tools["crm__get"].upstream, catalog.tools["crm__get"].tool.name) == (
        "crm",
        "get",
    )
    assert catalog.problems == ()


def test_a_clash_leaves_both_out_and_names_both() -> None:
    catalog = build(
        1,
        {
            "a": ("", Offer(tools=(tool("search"), tool("a_only")))),
            "b": ("", Offer(tools=(tool("search"),))),
        },
    )
    assert list(catalog.tools) == ["a_only"]
    assert catalog.problems == (
        "tool name 'search' is offered by 'a' and 'b'; left out until the upstreams' prefixes "
        "tell them apart",
    )


def test_a_name_invalid_for_mcp_is_left_out() -> None:
    catalog = build(
        1, {"x": ("x__", Offer(tools=(tool("has space"), tool("ok"), tool("a" * 126))))}
    )
    assert list(catalog.tools) == ["x__ok"]
    assert catalog.problems[0] == (
        "upstream 'x': tool 'has space' left out: 'x__has space' is not a valid MCP tool name "
        "(1 to 128 of A-Z a-z 0-9 _ - .)"
    )
    assert len(catalog.problems) == 2


async def test_upstreams_connect_in_parallel_and_a_dead_one_blocks_nobody() -> None:
    pool = Pool(
        {
            "one": stdio(),
            "two": stdio(prefix="second."),
            "ghost": stdio(command="/nonexistent/mcp-server", args=[]),
            "off": stdio(enabled=False),
        }
    )
    seen: list[Catalog] = []
    pool.subscribe(seen.append)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(pool.run)
        with anyio.fail_after(20):
            await pool.settled()
        states = {name: status.state for name, status in pool.statuses().items()}
        assert states == {
            "one": State.READY,
            "two": State.READY,
            "ghost": State.DOWN,
            "off": State.DISABLED,
        }
        names = list(pool.catalog.tools)
        assert names == sorted(f"one__{n}" for n in ECHO_TOOLS) + sorted(
            f"second.{n}" for n in ECHO_TOOLS
        )
        assert text(await call(pool, "second.echo", {"z": 1})) == "[('z', 1)]"
        with pytest.raises(UnknownTool, match="nope: no upstream offers this tool"):
            await call(pool, "nope", {})
        assert seen[-1] is pool.catalog
        assert [c.version for c in seen] == sorted({c.version for c in seen})
        # An upstream announcing new tools: the catalog has them within a second.
        version = pool.catalog.version
        await call(pool, "one__mutate", {})
        await until(lambda: "one__added" in pool.catalog.tools, 1)
        assert pool.catalog.version > version
        assert seen[-1] is pool.catalog
        tasks.cancel_scope.cancel()


async def test_two_upstreams_passing_names_through_clash() -> None:
    pool = Pool({"a": stdio(prefix=""), "b": stdio(prefix="")})
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(pool.run)
        with anyio.fail_after(20):
            await pool.settled()
        catalog = pool.catalog
        assert catalog.tools == {}
        assert catalog.prompts == {}
        assert catalog.resources == {}
        assert catalog.templates == ()
        names = "is offered by 'a' and 'b'; left out until the upstreams' prefixes tell them apart"
        uris = "is offered by 'a' and 'b'; left out until only one upstream offers it"
        assert f"tool name 'echo' {names}" in catalog.clashes
        assert f"prompt name 'greet' {names}" in catalog.clashes
        assert f"resource 'echo://static' {uris}" in catalog.clashes
        assert f"resource template 'echo://items/{{id}}' {uris}" in catalog.clashes
        assert len(catalog.clashes) == len(ECHO_TOOLS) + 3
        with pytest.raises(UpstreamError, match="no upstream offers a resource 'echo://static'"):
            await pool.read_resource("echo://static")
        tasks.cancel_scope.cancel()


def test_status_command_connects_once_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"""upstreams:
  echo:
    transport: stdio
    command: {sys.executable}
    args: [-m, tests.upstreams.servers.echo]
    cwd: {ROOT}
    env: {{PYTHONPATH: {ROOT}}}
  ghost:
    transport: stdio
    command: /nonexistent/mcp-server
    init_timeout: 2
"""
    )
    assert main(["upstreams", "status", "--config", str(config), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["problems"] == []
    rows = {row["upstream"]: row for row in report["upstreams"]}
    assert rows["echo"] == {
        "upstream": "echo",
        "transport": "stdio",
        "state": "ready",
        "tools": len(ECHO_TOOLS),
        "resources": 1,
        "templates": 1,
        "prompts": 1,
        "error": None,
        "notes": [],
    }
    assert rows["ghost"]["state"] == "down"
    assert "/nonexistent/mcp-server" in rows["ghost"]["error"]


def test_serve_refuses_to_start_when_two_upstreams_offer_one_name(tmp_path: Path) -> None:
    entry = (
        f"{{transport: stdio, command: {sys.executable}, args: [-m, tests.upstreams.servers.echo],"
        f" cwd: {ROOT}, env: {{PYTHONPATH: {ROOT}}}, prefix: ''}}"
    )
    config = tmp_path / "gateway.yaml"
    config.write_text(f"server: {{port: {free_port()}}}\nupstreams:\n  a: {entry}\n  b: {entry}\n")
    (tmp_path / "orgs").mkdir()
    gateway = str(Path(sys.executable).parent / "gateway")
    done = subprocess.run(
        [gateway, "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3
    assert (
        f"{config}: upstreams: tool name 'echo' is offered by 'a' and 'b'; left out until the "
        "upstreams' prefixes tell them apart"
    ) in done.stderr


def test_serve_starts_with_an_upstream_down_and_leaves_no_child_behind(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"""upstreams:
  echo: {{transport: stdio, command: {sys.executable}, args: [-m, tests.upstreams.servers.echo],
          cwd: {ROOT}, env: {{PYTHONPATH: {ROOT}}}}}
  ghost: {{transport: stdio, command: /nonexistent/mcp-server, init_timeout: 2}}
"""
    )
    (tmp_path / "orgs").mkdir()
    gateway = str(Path(sys.executable).parent / "gateway")
    with serving([gateway, "serve", "--config", str(config)], os.environ.copy()) as (proc, port):
        status, _, health = get_json(f"http://127.0.0.1:{port}/health")
        assert status == 200
        assert health["upstreams"] == {"down": 1, "ready": 2}  # echo and the gateway's own
        children = _children(proc.pid)
        assert len(children) == 1  # the echo upstream
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "upstream ghost is down: FileNotFoundError" in err
    assert all(gone(pid) for pid in children)


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(line) for line in found.stdout.split()]


async def test_killing_one_upstream_mid_call_leaves_the_others_serving() -> None:
    pool = Pool({"one": stdio(), "two": stdio()})
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(pool.run)
        with anyio.fail_after(20):
            await pool.settled()
        two_pid = text(await call(pool, "two__pid", {}))
        one_pid = int(text(await call(pool, "one__pid", {})))
        answers: list[str] = []
        failures: list[tuple[UpstreamError, float]] = []

        async def keep_calling_two() -> None:
            for n in range(40):  # spans the kill and the reconnect
                answers.append(text(await call(pool, "two__echo", {"n": n})))
                await anyio.sleep(0.01)

        async def long_call() -> None:
            try:
                await call(pool, "one__sleep", {"seconds": 30})
            except UpstreamError as exc:
                failures.append((exc, time.monotonic()))

        async with anyio.create_task_group() as calls:
            calls.start_soon(keep_calling_two)
            calls.start_soon(long_call)
            await anyio.sleep(0.2)
            killed = time.monotonic()
            os.kill(one_pid, signal.SIGKILL)
            await until(lambda: bool(failures), 5)
        error, when = failures[0]
        assert when - killed < 1.0
        assert str(error) == "upstream one: the connection was lost during sleep on upstream one"
        assert answers == [f"[('n', {n})]" for n in range(40)]
        assert text(await call(pool, "two__pid", {})) == two_pid
        await until(lambda: pool.statuses()["one"].state is State.READY, 15)
        assert int(text(await call(pool, "one__pid", {}))) != one_pid
        tasks.cancel_scope.cancel()


def test_an_upstream_retrying_after_failures_is_reported_down() -> None:
    """The start-up line and /health say "down" for an upstream between two failed
    attempts, whether a reader catches it in its backoff or in its next attempt (under
    load, the start-up line once caught the ghost above retrying and said "connecting")."""
    retrying = Status(State.CONNECTING, 0.0, "FileNotFoundError: no such file", failures=1)
    assert retrying.reported is State.DOWN
    assert Status(State.CONNECTING, 0.0).reported is State.CONNECTING  # a first attempt
    assert Status(State.READY, 0.0).reported is State.READY
