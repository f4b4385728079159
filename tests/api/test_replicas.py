"""Two gateway processes on one real Redis behave as one service: a session created on
one is read, followed and answered through the other; when the replica running it is
killed (SIGKILL, its whole process group, as a machine that dies) while it waits on the
model, the survivor takes the session over once its lease lapses and completes it, and
the upstream's ledger shows every call exactly once."""

from __future__ import annotations

import json
import os
import signal
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from tests.api.harness import envelope
from tests.engine.fake_anthropic import Reply, fake_messages
from tests.engine.test_restart import config
from tests.helpers import clean_env, serving, until

pytestmark = pytest.mark.anyio

KEY = "replica-key-carol-0001"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _tool(name: str, what: str) -> dict[str, Any]:
    return envelope("tool", call={"tool": name, "arguments": json.dumps({"what": what})})


def _config(tmp_path: Path, redis_url: str, model_url: str) -> Path:
    """The engine restart test's gateway (carol, the ledger upstream, Redis), planned by
    the fake Messages API instead of a script."""
    path = config(tmp_path, redis_url)
    settings = json.loads(path.read_text())
    settings["auth"]["api_keys"][0]["key"] = KEY
    settings["engine"] = {"planner": "anthropic", "anthropic": {"base_url": model_url}, "lease": 1}
    path.write_text(json.dumps(settings))
    return path


async def test_a_killed_replicas_session_is_completed_by_the_other(
    tmp_path: Path, redis_url: str
) -> None:
    replies = [
        Reply(envelope("clarify", question="Which book?")),
        Reply(_tool("ledger__read", "a")),
        # The answer the first runner never gets: it is killed while it waits.
        Reply(_tool("ledger__write", "lost"), delay=6),
        Reply(_tool("ledger__write", "b")),
        Reply(envelope("reply", text="booked")),
    ]
    async with fake_messages(replies) as fake, httpx2.AsyncClient(timeout=10) as http:
        config = _config(tmp_path, redis_url, fake.url)
        env = {**clean_env(), "ANTHROPIC_API_KEY": "sk-test"}
        command = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)]
        with ExitStack() as stack:
            one, one_port = stack.enter_context(serving(command, env, group=True))
            two, two_port = stack.enter_context(serving(command, env, group=True))
            first, second = f"http://127.0.0.1:{one_port}", f"http://127.0.0.1:{two_port}"

            created = await http.post(f"{first}/sessions", json={"message": "book"}, headers=AUTH)
            assert created.status_code == 201, created.text
            session_id = created.json()["id"]

            async def status(base: str) -> dict[str, Any]:
                answer = await http.get(f"{base}/sessions/{session_id}", headers=AUTH)
                assert answer.status_code == 200, answer.text
                view: dict[str, Any] = answer.json()
                return view

            for _ in range(400):  # read through the other replica; 20 s at most
                if (await status(second))["status"] == "input_required":
                    break
                await anyio.sleep(0.05)
            else:
                pytest.fail("the session never asked")

            frames: list[dict[str, Any]] = []
            ended = anyio.Event()

            async def follow() -> None:  # on the first replica, which survives
                async with http.stream(
                    "GET", f"{first}/events/{session_id}", headers=AUTH, timeout=60
                ) as stream:
                    async for line in stream.aiter_lines():
                        if line.startswith("data:"):
                            frames.append(json.loads(line[5:]))
                ended.set()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(follow)
                answered = await http.post(
                    f"{second}/sessions/{session_id}/interact",
                    json={"message": "the blue one"},
                    headers=AUTH,
                )
                assert answered.status_code == 202, answered.text
                # The second replica runs it now: read a, then it waits on the model.
                await until(lambda: len(fake.requests) >= 3, 20)
                os.killpg(two.pid, signal.SIGKILL)
                two.wait(timeout=10)
                with anyio.fail_after(30):
                    await ended.wait()
            one.poll()
            assert one.returncode is None

        types_ = [frame.get("type") for frame in frames]
        assert types_[0] == "snapshot"
        assert "resumed" in types_
        final = [f for f in frames if f.get("type") == "state"][-1]
        assert final["to"] == "completed"
        ids = [frame["id"] for frame in frames[1:] if "id" in frame]
        assert len(ids) == len(set(ids))  # nothing twice
        ledger = (tmp_path / "ledger").read_text().splitlines()
        calls = [line.split()[:2] for line in ledger]
        assert calls == [["read", "a"], ["write", "b"]], ledger
