"""A session's events over Server-Sent Events (`GET /events/{id}`), against a whole
gateway: a snapshot first, then every event with its stream id, ending after the final
state; a client that resumes with Last-Event-ID misses nothing and sees nothing twice;
events the stream no longer holds are a `gap` frame, never skipped in silence; refusals
are JSON, another caller's session the same 404 as none; a revoked key ends an open
stream; an idle stream carries keep-alive comments."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from gateway.state.base import START, parse_id
from gateway.state.memory import MemoryStore
from tests.api.harness import (
    Api,
    Frame,
    api_gateway,
    auth,
    clarify,
    flooded,
    reply,
    tool,
    whole_stream,
)
from tests.front.harness import gateway_yaml, key_entries

pytestmark = pytest.mark.anyio

STEP = 10.0
"""The bound on each test's waits: a scripted session takes milliseconds."""


@pytest.fixture
async def api(tmp_path: Path) -> Api:  # type: ignore[misc]
    async with api_gateway(tmp_path) as running:
        yield running


@pytest.fixture(autouse=True)
def no_crash(caplog: pytest.LogCaptureFixture) -> Any:
    """The gateway never fails a stream with an exception of its own, nor leaves one
    unfinished (a client would see it cut, not ended), but where a test expects it (it
    adds the message to the list this yields)."""
    expected: list[str] = []
    yield expected
    crashes = [
        record.getMessage()
        for record in (*caplog.get_records("call"), *caplog.records)  # and the teardown's
        if record.levelno >= logging.ERROR
        and ("ASGI" in record.getMessage() or record.name.startswith("gateway.api"))
        and record.getMessage() not in expected
    ]
    assert not crashes, crashes


async def frames_of(
    api: Api, session_id: str, user: str = "alice", last: str | None = None, most: int = 1000
) -> list[tuple[str | None, Frame]]:
    """Every frame of one SSE connection, until it ends (or `most`)."""
    with anyio.fail_after(STEP):
        return [frame async for frame in api.sse(session_id, user, last, most)]


def check_events(frames: list[tuple[str | None, Frame]]) -> None:
    """Each event frame's SSE id is its `id`."""
    for event_id, frame in frames:
        if frame["type"] in ("snapshot", "gap"):
            assert event_id is None, frame
        else:
            assert event_id == frame["id"], frame


async def test_a_snapshot_then_every_event_in_order_until_the_end(api: Api) -> None:
    api.script(tool("echo__sleep", seconds=0.3), tool("echo__echo", text="hi"), reply("done"))
    session_id = await api.start()
    live = await frames_of(api, session_id)  # opened while it runs: followed live
    (first_id, snapshot), rest = live[0], live[1:]
    assert first_id is None
    assert snapshot["type"] == "snapshot"
    assert snapshot["session"]["id"] == session_id
    assert snapshot["session"]["status"] in ("submitted", "working")
    check_events(rest)
    assert [frame for _, frame in rest] == await whole_stream(api, session_id)
    assert rest[-1][1]["type"] == "state"
    assert rest[-1][1]["to"] == "completed"
    assert "reply" in [frame["type"] for _, frame in rest]

    ended = await frames_of(api, session_id)  # opened once it ended: read, then closed
    assert ended[0][1]["type"] == "snapshot"
    assert ended[0][1]["session"]["status"] == "completed"
    assert ended[0][1]["session"]["reply"] == "done"
    assert ended[1:] == rest


async def test_a_dropped_connection_resumes_after_the_last_event_it_saw(api: Api) -> None:
    api.script(*(tool("echo__sleep", seconds=0.1 + n / 100) for n in range(4)), reply("done"))
    session_id = await api.start()
    seen: list[tuple[str | None, Frame]] = []
    for k in (4, 3, 5):  # drop after k events, then after k more, then read to the end
        last = seen[-1][0] if seen else None
        part = await frames_of(api, session_id, last=last, most=1 + k)
        assert part[0][0] is None
        assert part[0][1]["type"] == "snapshot"  # every connection starts with one
        seen += part[1:]
        assert all(frame["type"] != "gap" for _, frame in part)
    rest = await frames_of(api, session_id, last=seen[-1][0])
    assert rest[0][1]["type"] == "snapshot"
    seen += rest[1:]
    check_events(seen)
    assert seen[-1][1]["type"] == "state"
    assert seen[-1][1]["to"] == "completed"
    assert [frame for _, frame in seen] == await whole_stream(api, session_id)  # no loss, no twice


async def test_events_no_longer_held_are_a_gap_never_a_silent_skip(tmp_path: Path) -> None:
    async with api_gateway(tmp_path, config="state: {stream_max_len: 3}\n") as api:
        store = api.store
        assert isinstance(store, MemoryStore)
        # The front harness opens its store without state.stream_max_len: set it here.
        store.stream_max_len = 3
        api.script(clarify("First?"), clarify("Second?"), reply("done"))
        session_id = await api.start()
        await api.until(session_id, "input_required")
        held = await whole_stream(api, session_id)
        assert len(held) == 3  # accepted and the first state are gone already
        first = next(frame["id"] for frame in held if frame["type"] == "question")

        fresh = await frames_of(api, session_id, most=5)  # no Last-Event-ID: a gap too
        _assert_gap(fresh[1], START, held[0]["id"])
        assert [frame for _, frame in fresh[2:]] == held

        await api.http.post(
            f"{api.base}/sessions/{session_id}/interact",
            json={"message": "x"},
            headers=auth("alice"),
        )
        await api.until(session_id, "input_required")
        waiting = await whole_stream(api, session_id)
        assert first not in [frame["id"] for frame in waiting]  # trimmed since

        # Live (the session waits): the gap, then what the stream holds, then it follows.
        live = await frames_of(api, session_id, last=first, most=5)
        assert live[0][1]["type"] == "snapshot"
        _assert_gap(live[1], first, waiting[0]["id"])
        assert [frame for _, frame in live[2:]] == waiting
        check_events(live)

        second = next(frame["id"] for frame in waiting if frame["type"] == "question")
        await api.http.post(
            f"{api.base}/sessions/{session_id}/interact",
            json={"message": "y"},
            headers=auth("alice"),
        )
        await api.until(session_id, "completed")
        ended = await whole_stream(api, session_id)
        assert second not in [frame["id"] for frame in ended]

        # Ended: the gap, what is left, then the end.
        after = await frames_of(api, session_id, last=second)
        assert after[0][1]["session"]["status"] == "completed"
        _assert_gap(after[1], second, ended[0]["id"])
        assert [frame for _, frame in after[2:]] == ended
        assert ended[-1]["type"] == "state"
        assert ended[-1]["to"] == "completed"


def _assert_gap(frame: tuple[str | None, Frame], after: str, first_held: str) -> None:
    event_id, gap = frame
    assert event_id is None
    assert gap["type"] == "gap"
    assert gap["after"] == after
    lost = gap["lost_through"]
    assert parse_id(after) < parse_id(lost) < parse_id(first_held), gap


async def test_refusals_are_json_and_another_callers_session_is_unknown(api: Api) -> None:
    api.script(clarify())
    session_id = await api.start()
    await api.until(session_id, "input_required")
    url = f"{api.base}/events/{session_id}"

    bad = await api.http.get(url, headers={**auth("alice"), "Last-Event-ID": "yesterday"})
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_event_id"
    assert "Last-Event-ID" in bad.json()["detail"]

    unknown = "s_" + "x" * (len(session_id) - 2)
    answers = []
    for user, target in (("carol", session_id), ("bob", session_id), ("alice", unknown)):
        answer = await api.http.get(f"{api.base}/events/{target}", headers=auth(user))
        assert answer.headers["content-type"].startswith("application/json")
        answers.append((answer.status_code, answer.text.replace(target, "ID")))
    assert answers[0] == answers[1] == answers[2], answers
    assert answers[0][0] == 404

    for headers in ({}, {"Authorization": "Bearer not-a-key-at-all-0000"}):
        refused = await api.http.get(url, headers=headers)
        assert refused.status_code == 401
        assert refused.json()["error"] == "unauthorized"
        assert refused.headers["www-authenticate"].startswith("Bearer")


async def test_a_revoked_key_ends_an_open_stream(api: Api) -> None:
    api.script(clarify())
    session_id = await api.start()
    await api.until(session_id, "input_required")
    frames: list[Frame] = []
    waiting, ended = anyio.Event(), anyio.Event()

    async def follow() -> None:
        async for _, frame in api.sse(session_id):
            frames.append(frame)
            if frame.get("to") == "input_required":
                waiting.set()
        ended.set()  # it ended by itself, cleanly: not cut (that would raise here)

    with anyio.fail_after(STEP):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(follow)
            await waiting.wait()
            with anyio.move_on_after(0.3):
                await ended.wait()
            assert not ended.is_set()  # the session waits: so does its stream
            bob_and_carol = "".join(
                line + "\n" for line in key_entries().splitlines() if "user: alice," not in line
            )
            config = gateway_yaml(auth="  api_keys:\n" + bob_and_carol)
            config += "engine: {planner: none}\n"
            api.gateway.config.path.write_text(config, encoding="utf-8")
            with anyio.fail_after(3):  # within seconds of the edit
                await ended.wait()
    assert frames[-1]["to"] == "input_required"  # nothing more came: it just ended
    refused = await api.http.get(f"{api.base}/events/{session_id}", headers=auth("alice"))
    assert refused.status_code == 401
    bob = await api.http.get(f"{api.base}/sessions", headers=auth("bob"))
    assert bob.status_code == 200  # bob's key was kept


async def test_an_idle_stream_carries_keep_alive_comments(tmp_path: Path) -> None:
    async with api_gateway(tmp_path, config="api: {keepalive: 0.2}\n") as api:
        api.script(clarify())
        session_id = await api.start()
        await api.until(session_id, "input_required")
        comments: list[str] = []
        data: list[str] = []
        with anyio.fail_after(STEP):
            async with api.http.stream(
                "GET", f"{api.base}/events/{session_id}", headers=auth("alice")
            ) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                assert response.headers["cache-control"] == "no-store"
                async for line in response.aiter_lines():
                    if line.startswith(":"):
                        comments.append(line)
                    elif line.startswith("data:"):
                        data.append(line)
                    if len(comments) >= 3:
                        break
        assert len(comments) >= 3
        assert len(data) == 6  # the snapshot and the 5 events, no more: the rest were comments


async def test_a_client_too_slow_to_read_is_disconnected(
    tmp_path: Path, no_crash: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    # All a server can do to drop a connection is leave its response unfinished.
    no_crash.append("ASGI callable returned without completing response.")
    async with api_gateway(tmp_path, config="api: {send_timeout: 0.5}\n") as api:
        session_id, stream = await flooded(api)  # ~11 MB of events
        got: list[tuple[str | None, Frame]] = []

        async def read_slowly() -> None:
            async for frame in api.sse(session_id):
                got.append(frame)
                if len(got) == 1:  # the client stops reading for a while
                    assert (await api.http.get(f"{api.base}/healthz")).status_code == 200
                    await anyio.sleep(2)

        with anyio.fail_after(STEP), pytest.raises(httpx2.RemoteProtocolError):
            await read_slowly()
        # It read what was sent before the gateway gave up, then the connection was cut.
        said = [frame for _, frame in got[1:]]
        assert said == stream[: len(said)]
        assert len(said) < len(stream)
        assert any("did not keep up" in r.getMessage() for r in caplog.get_records("call"))
        # It resumes where it was cut off, missing nothing.
        most = 1 + len(stream) - len(said)
        rest = await frames_of(api, session_id, last=said[-1]["id"], most=most)
        assert said + [frame for _, frame in rest[1:]] == stream
