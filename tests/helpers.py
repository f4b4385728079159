"""Helpers shared by test modules: a gateway process serving HTTP, its JSON answers, the
environment it runs in, the demo config for `tags why`, and bounded waiting."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types

from gateway.upstreams.config import OnDefinitionChange
from gateway.upstreams.definitions import DefinitionLedger
from tests.conftest import DEMO_CONFIG, ROOT
from tests.redis_server import free_port


@contextlib.contextmanager
def serving(
    command: list[str], env: dict[str, str], *, group: bool = False
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Start `command` with `--port N` added, wait (bounded) until /health answers, yield
    the process and port; the process is always reaped. With `group`, it leads a process
    group of its own, killed whole at the end (what it started too: a test may kill the
    process itself as a crash would, leaving its children to go)."""
    port = free_port()
    proc = subprocess.Popen(
        [*command, "--port", str(port)],
        cwd=ROOT,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=group,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.1)
        yield proc, port
    finally:
        if group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        # Always: its pipes are closed here, not left to the garbage collector (a
        # ResourceWarning in whichever test it runs), also when the kill above already
        # ended it or the test read them.
        proc.communicate(timeout=10)


def get_json(url: str) -> tuple[int, dict[str, str], Any]:
    """GET `url`: its status, headers and JSON body, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def clean_env() -> dict[str, str]:
    """This process's environment without the variables that would point a gateway
    elsewhere than the config its test gives it."""
    unset = ("GATEWAY_CONFIG", "GATEWAY_STATE_URL")
    return {k: v for k, v in os.environ.items() if k not in unset}


def why_config(tmp_path: Path, *, recorded: bool = False) -> str:
    """The demo's tags and upstreams with a data directory of the test's own, so that what
    a gateway run recorded elsewhere (configs/.gateway) cannot change the answer; with
    `recorded`, its ledger holds the refund tool's definition, as a gateway run leaves it."""
    text = DEMO_CONFIG.read_text().replace("dir: orgs", f"dir: {DEMO_CONFIG.parent / 'orgs'}")
    (tmp_path / "gateway.yaml").write_text(f"data_dir: {tmp_path / 'data'}\n{text}")
    if recorded:
        schema = {
            "type": "object",
            "properties": {
                "order_id": {"type": "string"},
                "amount": {"type": "number"},
                "currency": {"type": "string", "default": "USD"},
            },
            "required": ["order_id", "amount"],
        }
        ledger = DefinitionLedger(tmp_path / "data" / "tool-definitions.json")
        tool = types.Tool(name="refund", input_schema=schema)
        ledger.judge("payments", [tool], OnDefinitionChange.AUDIT)
    return str(tmp_path / "gateway.yaml")


async def until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll `predicate` every 20 ms; fail the test when it is not true within `seconds`."""
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"not true within {seconds} s")


def gone(pid: int) -> bool:
    """No process `pid` exists: it exited and was reaped (a zombie is not gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
