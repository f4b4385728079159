"""A whole gateway in the test process for the session API's tests: the front harness's,
with a scripted planner set per test, and clients for REST, SSE and WebSocket."""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2

from gateway.engine.planners.scripted import ScriptedPlanner
from gateway.runtime import Runtime
from gateway.state.base import START, StateStore, Stream
from tests.engine.helpers import envelope, reply, tool
from tests.front.harness import GLOBEX, KEYS, Gateway, gateway_yaml, running_gateway

ACME = """
users:
  alice: {roles: [support]}
  bob: {roles: [support]}
tags:
  - tag: acme
    kind: company
    payload:
      content: "Acme Corp: be polite."
      config: {assigned_users: ["*"]}
  - tag: support
    kind: role
    payload:
      content: "You help customers."
      config:
        assigned_roles: [support]
        allowed_tools: ["echo__*"]
        denied_tools: ["echo__crash"]
        trusted_output: ["echo__*"]
        needs_approval: ["echo__pay"]
"""

Frame = dict[str, Any]


__all__ = ["envelope", "reply", "tool"]  # the engine tests' envelopes, used from here too


def clarify(question: str = "Which one?") -> dict[str, Any]:
    return envelope("clarify", question=question)


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[user]}"}


@dataclass
class Api:
    base: str
    gateway: Gateway
    http: httpx2.AsyncClient
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.gateway.app.state.runtime
        return runtime

    @property
    def store(self) -> StateStore:
        return self.runtime.state

    def script(self, *envelopes: Mapping[str, Any]) -> None:
        """What the planner answers, turn by turn, in every session from now on."""
        self.runtime.engine.turns.planner = ScriptedPlanner(envelopes)

    async def start(self, user: str = "alice", **body: Any) -> str:
        answer = await self.http.post(
            f"{self.base}/sessions", json={"message": "help", **body}, headers=auth(user)
        )
        assert answer.status_code == 201, answer.text
        session_id: str = answer.json()["id"]
        return session_id

    async def get(self, session_id: str, user: str = "alice") -> Frame:
        answer = await self.http.get(f"{self.base}/sessions/{session_id}", headers=auth(user))
        assert answer.status_code == 200, answer.text
        view: Frame = answer.json()
        return view

    async def until(self, session_id: str, *statuses: str, user: str = "alice") -> Frame:
        """The session once it is in one of `statuses` (bounded)."""
        with anyio.fail_after(15):
            while True:
                view = await self.get(session_id, user)
                if view["status"] in statuses:
                    return view
                await anyio.sleep(0.02)

    async def sse(
        self, session_id: str, user: str = "alice", last: str | None = None, most: int = 1000
    ) -> AsyncIterator[tuple[str | None, Frame]]:
        """The frames of one SSE connection, as (id, data), until it ends or `most`."""
        headers = auth(user)
        if last is not None:
            headers["Last-Event-ID"] = last
        async with self.http.stream(
            "GET", f"{self.base}/events/{session_id}", headers=headers
        ) as response:
            assert response.status_code == 200, await response.aread()
            event_id: str | None = None
            data: list[str] = []
            seen = 0
            async for line in response.aiter_lines():
                if line.startswith("id:"):
                    event_id = line[3:].strip() or None
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and data:
                    yield event_id, json.loads("\n".join(data))
                    event_id, data = None, []
                    seen += 1
                    if seen >= most:
                        return


async def whole_stream(api: Api, session_id: str) -> list[Frame]:
    """The session's stream as the store holds it, each event as its frame is sent: its
    stream id as `id`, an event's own id (an envelope's) as `answer_id`."""
    batch = await api.store.read(session_id, Stream.EVENTS, START, 10_000)
    frames = []
    for event in batch.events:
        frame = {**event.data, "id": event.id}
        if "id" in event.data:
            frame["answer_id"] = event.data["id"]
        frames.append(frame)
    return frames


async def flooded(api: Api) -> tuple[str, list[Frame]]:
    """A session waiting after ~11 MB of events in frames of at most ~1.5 MB (within the
    50 calls a session may make): far more than a loopback connection's buffers hold (the
    kernel's, at most tcp_wmem's 4 MB, and the transport's). Its id and its stream."""
    big = "x" * 120_000
    turns = [
        envelope(
            "tools",
            calls=[
                {"tool": "echo__echo", "arguments": json.dumps({"text": f"{big}{t}.{n}"})}
                for n in range(12)
            ],
            mode="sequential",
        )
        for t in range(4)
    ]
    api.script(*turns, clarify())
    session_id = await api.start()
    held = await api.until(session_id, "input_required", "failed", "completed")
    assert held["status"] == "input_required", held["error"]
    return session_id, await whole_stream(api, session_id)


@asynccontextmanager
async def api_gateway(
    directory: Path, config: str = "", acme: str = ACME, state_url: str = "memory://"
) -> AsyncIterator[Api]:
    """A gateway with the API's test tags, no planner until a test scripts one, and
    `config` added to its gateway.yaml."""
    text = gateway_yaml() + "engine: {planner: none}\n" + textwrap.dedent(config)
    orgs = {"acme": acme, "globex": GLOBEX}
    async with (
        running_gateway(directory, text, orgs, state_url=state_url) as gateway,
        httpx2.AsyncClient(timeout=10) as http,
    ):
        yield Api(gateway.url.removesuffix("/mcp"), gateway, http)
