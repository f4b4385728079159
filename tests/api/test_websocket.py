"""A session over the WebSocket (`/ws/{id}`, and `/ws`, which starts one), against a whole
gateway: the frames of SSE (a snapshot, then every event, closed after the final state),
and the caller's word on the same connection (answer, approve, reject, cancel), each
acknowledged; a single-use, short-lived token bound to its session, or a header
credential; a foreign Origin refused before the upgrade is accepted; bad frames answered
with an error frame on a socket that stays usable; a revoked key closes it; a client too
slow to read is disconnected, and the others are served meanwhile."""

from __future__ import annotations

import json
import logging
import socket as sockets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.api import sessions
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
CONTROL = ("ack", "ping", "error", "started", "snapshot")
"""Frames that are no event of the stream."""


@pytest.fixture
async def api(tmp_path: Path) -> Api:  # type: ignore[misc]
    async with api_gateway(tmp_path) as running:
        yield running


@pytest.fixture(autouse=True)
def no_crash(caplog: pytest.LogCaptureFixture) -> Any:
    """The gateway never fails a WebSocket with an exception of its own."""
    yield
    crashes = [
        record.getMessage()
        for record in (*caplog.get_records("call"), *caplog.records)  # and the teardown's
        if record.levelno >= logging.ERROR
        and ("ASGI" in record.getMessage() or record.name.startswith("gateway.api"))
    ]
    assert not crashes, crashes


def ws_url(api: Api, path: str) -> str:
    return api.base.replace("http://", "ws://", 1) + path


async def token(api: Api, session_id: str | None = None, user: str = "alice") -> str:
    body = {} if session_id is None else {"session_id": session_id}
    answer = await api.http.post(f"{api.base}/tokens", json=body, headers=auth(user))
    assert answer.status_code == 201, answer.text
    assert answer.headers["cache-control"] == "no-store"
    minted: str = answer.json()["token"]
    return minted


@asynccontextmanager
async def socket(
    api: Api, path: str, headers: dict[str, str] | None = None, origin: str | None = None
) -> AsyncIterator[ClientConnection]:
    with anyio.fail_after(STEP):
        async with connect(
            ws_url(api, path),
            additional_headers=headers,
            origin=origin,  # type: ignore[arg-type]
            open_timeout=STEP,
            close_timeout=2,
        ) as ws:
            yield ws


async def receive(ws: ClientConnection) -> Frame:
    with anyio.fail_after(STEP):
        frame: Frame = json.loads(await ws.recv())
    return frame


async def until(ws: ClientConnection, done: Callable[[Frame], bool]) -> list[Frame]:
    """Frames up to and with the first that is `done`."""
    frames: list[Frame] = []
    while not frames or not done(frames[-1]):
        frames.append(await receive(ws))
    return frames


async def to_the_end(ws: ClientConnection) -> list[Frame]:
    """Every frame until the gateway closes the socket."""
    frames: list[Frame] = []
    with anyio.fail_after(STEP):
        try:
            async for message in ws:
                frames.append(json.loads(message))
        except ConnectionClosed:
            pass
    return frames


def events(frames: list[Frame]) -> list[Frame]:
    return [frame for frame in frames if frame["type"] not in CONTROL]


def waits(frame: Frame) -> bool:
    return bool(frame["type"] == "state" and frame["to"] == "input_required")


async def refused(api: Api, path: str, **options: Any) -> int:
    """The HTTP status that refused the upgrade."""
    with pytest.raises(InvalidStatus) as caught:
        async with socket(api, path, **options):
            pass
    status: int = caught.value.response.status_code
    return status


async def test_a_question_answered_over_the_socket(api: Api) -> None:
    api.script(clarify("Blue or green?"), reply("blue it is"))
    session_id = await api.start()
    minted = await token(api, session_id)
    async with socket(api, f"/ws/{session_id}?token={minted}") as ws:
        first = await receive(ws)
        assert first["type"] == "snapshot"
        assert first["session"]["id"] == session_id
        asked = await until(ws, waits)
        assert "question" in [frame["type"] for frame in asked]
        await ws.send(json.dumps({"type": "interact", "message": "blue"}))
        rest = await to_the_end(ws)
        assert ws.close_code == 1000
    assert {"type": "ack", "for": "interact"} in rest
    said = events(asked + rest)
    assert said == await whole_stream(api, session_id)
    assert [f["text"] for f in said if f["type"] == "reply"] == ["blue it is"]
    assert said[-1]["type"] == "state"
    assert said[-1]["to"] == "completed"

    # Reconnected with `since` (SSE's Last-Event-ID): a snapshot, then what came after.
    asked_id = next(frame["id"] for frame in said if frame["type"] == "question")
    async with socket(api, f"/ws/{session_id}?since={asked_id}", headers=auth("alice")) as ws:
        again = await to_the_end(ws)
        assert ws.close_code == 1000
    assert again[0]["type"] == "snapshot"
    assert again[0]["session"]["status"] == "completed"
    assert again[1:] == said[[frame["id"] for frame in said].index(asked_id) + 1 :]
    async with socket(api, f"/ws/{session_id}?since=yesterday", headers=auth("alice")) as ws:
        refusal = await to_the_end(ws)
        assert ws.close_code == 4400
    assert [frame["error"] for frame in refusal] == ["invalid_event_id"]


async def test_an_approval_decided_over_the_socket(api: Api, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    api.script(tool("echo__pay", journal=str(journal)), reply("paid"))
    session_id = await api.start()
    async with socket(api, f"/ws/{session_id}?token={await token(api, session_id)}") as ws:
        await until(ws, waits)
        held = await api.until(session_id, "input_required")
        assert held["waiting"] == "approval"
        assert not journal.exists()
        await ws.send(json.dumps({"type": "approve", "approval": held["approval"]["id"]}))
        rest = await to_the_end(ws)
    assert {"type": "ack", "for": "approve"} in rest
    done = await api.until(session_id, "completed")
    assert done["reply"] == "paid"
    assert journal.read_text() == "pay\n"  # it ran, once


async def test_an_approval_rejected_over_the_socket(api: Api, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    api.script(tool("echo__pay", journal=str(journal)), reply("not paid"))
    session_id = await api.start()
    async with socket(api, f"/ws/{session_id}?token={await token(api, session_id)}") as ws:
        await until(ws, waits)
        approval = (await api.until(session_id, "input_required"))["approval"]["id"]
        decision = {"type": "reject", "approval": approval, "message": "not today"}
        await ws.send(json.dumps(decision))
        rest = await to_the_end(ws)
    assert {"type": "ack", "for": "reject"} in rest
    decided = [f for f in events(rest) if f["type"] == "approval_decided"]
    assert [(f["verdict"], f["message"]) for f in decided] == [("reject", "not today")]
    done = await api.until(session_id, "completed")
    assert done["reply"] == "not paid"
    assert not journal.exists()


async def test_a_session_cancelled_over_the_socket(api: Api) -> None:
    api.script(tool("echo__sleep", seconds=30), reply())
    session_id = await api.start()
    async with socket(api, f"/ws/{session_id}", headers=auth("alice")) as ws:
        await until(ws, lambda frame: frame["type"] == "intent")  # its call under way
        await ws.send(json.dumps({"type": "cancel"}))
        rest = await to_the_end(ws)
        assert ws.close_code == 1000
    assert {"type": "ack", "for": "cancel"} in rest
    assert events(rest)[-1]["type"] == "state"
    assert events(rest)[-1]["to"] == "canceled"
    ended = await api.until(session_id, "canceled")
    assert ended["error"] == "cancelled by its caller"


async def test_a_token_opens_its_session_once_and_soon(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.script(clarify())
    session_id = await api.start()
    other = await api.start()
    await api.until(session_id, "input_required")
    minted = await token(api, session_id)
    async with socket(api, f"/ws/{session_id}?token={minted}") as ws:
        assert (await receive(ws))["type"] == "snapshot"
    assert await refused(api, f"/ws/{session_id}?token={minted}") == 403  # used once

    assert await refused(api, f"/ws/{other}?token={await token(api, session_id)}") == 403
    assert await refused(api, f"/ws?token={await token(api, session_id)}") == 403
    assert await refused(api, f"/ws/{session_id}?token=made-up-token") == 403
    assert await refused(api, f"/ws/{session_id}") == 403  # no token, no header
    wrong = {"Authorization": "Bearer not-a-key-at-all-0000"}
    assert await refused(api, f"/ws/{session_id}", headers=wrong) == 403

    monkeypatch.setattr(sessions, "TOKEN_SECONDS", 0.3)
    brief = await token(api, session_id)
    await anyio.sleep(0.6)
    assert await refused(api, f"/ws/{session_id}?token={brief}") == 403  # expired

    # A token minted for no session starts one (/ws), or opens one of its caller's own:
    # what the widget reconnects with.
    async with socket(api, f"/ws/{session_id}?token={await token(api)}") as ws:
        assert (await receive(ws))["session"]["id"] == session_id
    async with socket(api, f"/ws/{session_id}?token={await token(api, user='bob')}") as ws:
        assert [f["error"] for f in await to_the_end(ws)] == ["not_found"]
        assert ws.close_code == 4404

    # A client that can send headers uses its credential, as on REST.
    async with socket(api, f"/ws/{session_id}", headers=auth("alice")) as ws:
        first = await receive(ws)
        assert first["type"] == "snapshot"
        assert first["session"]["status"] == "input_required"


async def test_another_callers_session_is_as_unknown_as_none(api: Api) -> None:
    api.script(clarify())
    session_id = await api.start()
    await api.until(session_id, "input_required")
    minted = await api.http.post(
        f"{api.base}/tokens", json={"session_id": session_id}, headers=auth("carol")
    )
    assert minted.status_code == 404
    unknown = "s_" + "x" * (len(session_id) - 2)
    seen = []
    for user, target in (("carol", session_id), ("bob", session_id), ("alice", unknown)):
        async with socket(api, f"/ws/{target}", headers=auth(user)) as ws:
            frames = await to_the_end(ws)
            assert ws.close_code == 4404
            seen.append(json.dumps(frames).replace(target, "ID"))
    assert seen[0] == seen[1] == seen[2]
    assert json.loads(seen[0])[0]["error"] == "not_found"
    assert (await api.get(session_id))["status"] == "input_required"


async def test_a_foreign_origin_is_refused_before_the_upgrade(tmp_path: Path) -> None:
    config = 'api: {widget_origins: ["https://shop.example", "https://dev.example:*"]}\n'
    async with api_gateway(tmp_path, config=config) as api:
        api.script(clarify())
        session_id = await api.start()
        await api.until(session_id, "input_required")
        for origin in ("https://evil.example", "https://shop.example.evil", "null"):
            minted = await token(api, session_id)
            path = f"/ws/{session_id}?token={minted}"
            assert await refused(api, path, origin=origin) == 403, origin
            path = f"/ws?token={await token(api)}"
            assert await refused(api, path, origin=origin) == 403, origin
        own = api.base  # the gateway's own page
        for origin in ("https://shop.example", "https://dev.example:8443", own):
            path = f"/ws/{session_id}?token={await token(api, session_id)}"
            async with socket(api, path, origin=origin) as ws:
                assert (await receive(ws))["type"] == "snapshot", origin


async def test_a_socket_that_starts_its_session(api: Api) -> None:
    api.script(tool("echo__echo", text="hi"), reply("started and done"))
    async with socket(api, f"/ws?token={await token(api)}") as ws:
        await ws.send(json.dumps({"type": "start", "message": "say hi"}))
        started = await receive(ws)
        assert started["type"] == "started"
        session_id = started["session"]["id"]
        assert started["session"]["links"]["events"] == f"/events/{session_id}"
        snapshot = await receive(ws)
        assert snapshot["type"] == "snapshot"
        assert snapshot["session"]["id"] == session_id
        assert snapshot["session"]["message"] == "say hi"
        rest = await to_the_end(ws)
        assert ws.close_code == 1000
    said = events(rest)
    assert said == await whole_stream(api, session_id)
    assert [f["text"] for f in said if f["type"] == "reply"] == ["started and done"]
    listed = await api.http.get(f"{api.base}/sessions", headers=auth("alice"))
    assert session_id in [s["id"] for s in listed.json()["sessions"]]


async def test_a_start_that_is_no_start_is_refused(api: Api) -> None:
    async with socket(api, "/ws", headers=auth("alice")) as ws:
        await ws.send(json.dumps({"type": "interact", "message": "x"}))
        frames = await to_the_end(ws)
        assert ws.close_code == 4400
    assert [f["error"] for f in frames] == ["invalid_frame"]
    async with socket(api, "/ws", headers=auth("alice")) as ws:
        await ws.send(json.dumps({"type": "start", "message": "x", "colour": "red"}))
        frames = await to_the_end(ws)
        assert ws.close_code == 4400
    assert [f["error"] for f in frames] == ["invalid_frame"]
    assert "colour" in frames[0]["detail"]


async def test_bad_frames_get_an_error_and_the_socket_stays_usable(api: Api) -> None:
    api.script(clarify(), reply("still here"))
    session_id = await api.start()
    async with socket(api, f"/ws/{session_id}", headers=auth("alice")) as ws:
        await until(ws, waits)
        bad: list[tuple[str | bytes, str]] = [
            ("not json", "invalid_json"),
            ("[1, 2]", "invalid_frame"),
            (json.dumps({"type": "dance"}), "invalid_frame"),
            (json.dumps({"type": "approve"}), "invalid_frame"),
            (json.dumps({"type": "interact"}), "invalid_frame"),
            (json.dumps({"type": "interact", "message": "x", "extra": 1}), "invalid_frame"),
            (json.dumps({"type": "approve", "approval": "1-0"}), "not_waiting"),
            (b'{"type": "cancel", "mode": "later"}', "invalid_frame"),
            (json.dumps({"type": "x", "pad": "y" * 300_000}), "frame_too_large"),
        ]
        for raw, code in bad:
            await ws.send(raw)
            answer = await until(ws, lambda frame: frame["type"] == "error")
            assert answer[-1]["error"] == code, (raw, answer)
            assert answer[-1]["detail"]
        assert (await api.get(session_id))["status"] == "input_required"
        await ws.send(json.dumps({"type": "interact", "message": "ok"}))
        rest = await to_the_end(ws)
    assert {"type": "ack", "for": "interact"} in rest
    assert [f["text"] for f in events(rest) if f["type"] == "reply"] == ["still here"]


async def test_a_revoked_key_closes_an_open_socket(api: Api) -> None:
    api.script(clarify())
    session_id = await api.start()
    await api.until(session_id, "input_required")
    async with (
        socket(api, f"/ws/{session_id}?token={await token(api, session_id)}") as by_token,
        socket(api, f"/ws/{session_id}", headers=auth("alice")) as by_header,
        socket(api, f"/ws?token={await token(api, user='bob')}") as bobs,
    ):
        await until(by_token, waits)
        await until(by_header, waits)
        await anyio.sleep(0.3)
        kept = "".join(
            line + "\n" for line in key_entries().splitlines() if "user: alice," not in line
        )
        config = gateway_yaml(auth="  api_keys:\n" + kept) + "engine: {planner: none}\n"
        api.gateway.config.path.write_text(config, encoding="utf-8")
        with anyio.fail_after(3):  # within seconds of the edit
            await to_the_end(by_token)
            await to_the_end(by_header)
        assert by_token.close_code == 1008
        assert by_header.close_code == 1008
        # bob's socket, minted with a key that was kept, goes on (it waits for its start).
        await bobs.send(json.dumps({"type": "start", "message": "hi"}))
        assert (await receive(bobs))["type"] == "started"
    assert await refused(api, f"/ws/{session_id}", headers=auth("alice")) == 403


async def test_a_client_too_slow_to_read_is_disconnected_and_others_are_served(
    tmp_path: Path,
) -> None:
    async with api_gateway(tmp_path, config="api: {send_timeout: 0.5}\n") as api:
        slow_id, stream = await flooded(api)  # ~11 MB of events
        port = int(api.base.rsplit(":", 1)[1])
        raw = sockets.socket()
        raw.setsockopt(sockets.SOL_SOCKET, sockets.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", port))
        raw.setblocking(False)
        async with connect(
            ws_url(api, f"/ws/{slow_id}"),
            sock=raw,
            additional_headers=auth("alice"),
            max_queue=1,  # the client takes in a frame, then stops reading
            max_size=None,
            compression=None,  # not deflated: "xxx..." would fit any buffer
            close_timeout=1,
        ) as slow:
            api.script(clarify("Still there?"))
            other_id = await api.start()
            async with socket(api, f"/ws/{other_id}", headers=auth("alice")) as other:
                asked = await until(other, waits)  # served while the slow one is stuck
                assert asked[0]["type"] == "snapshot"
                assert (await api.http.get(f"{api.base}/healthz")).status_code == 200
                await anyio.sleep(2)  # the slow client reads nothing meanwhile
                got = await to_the_end(slow)  # now it reads: what was sent, then the end
                assert slow.close_code == 1006  # cut: no close frame got through
                assert got[0]["type"] == "snapshot"
                said = events(got)
                assert said == stream[: len(said)]
                assert len(said) < len(stream)  # it was cut off before the stream's end
                # The healthy client was not: it still follows its session.
                await other.send(json.dumps({"type": "cancel"}))
                rest = await to_the_end(other)
                assert events(rest)[-1]["to"] == "canceled"
        # The slow client resumes where it was cut off, missing nothing.
        path = f"/ws/{slow_id}?since={said[-1]['id']}"
        async with connect(
            ws_url(api, path), additional_headers=auth("alice"), max_size=None
        ) as again:
            resumed = await until(again, waits)
        assert said + events(resumed) == stream


async def test_a_token_minted_before_its_key_was_revoked_opens_nothing(api: Api) -> None:
    api.script(clarify())
    minted = await token(api)  # a token for /ws, kept while the key goes
    kept = "".join(line + "\n" for line in key_entries().splitlines() if "user: alice," not in line)
    config = gateway_yaml(auth="  api_keys:\n" + kept) + "engine: {planner: none}\n"
    api.gateway.config.path.write_text(config, encoding="utf-8")
    for _ in range(150):  # the edit applied: 3 s at most
        if (await api.http.get(f"{api.base}/sessions", headers=auth("alice"))).status_code == 401:
            break
        await anyio.sleep(0.02)
    assert await refused(api, f"/ws?token={minted}") == 403


async def test_a_token_shown_to_a_refused_upgrade_is_spent(api: Api) -> None:
    minted = await token(api)
    assert await refused(api, f"/ws?token={minted}", origin="https://evil.example") == 403
    assert await refused(api, f"/ws?token={minted}") == 403  # not left for another to use


async def test_a_token_never_reaches_uvicorns_log(api: Api) -> None:
    """uvicorn tells of each upgrade, its URL with it, in its error log at INFO."""
    api.script(reply())
    session_id = await api.start()
    await api.until(session_id, "completed")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    log = logging.getLogger("uvicorn.error")
    level, keep = log.level, Keep()
    log.setLevel(logging.INFO)
    log.addHandler(keep)
    try:
        minted = await token(api, session_id)
        async with socket(api, f"/ws/{session_id}?token={minted}") as ws:
            await to_the_end(ws)
    finally:
        log.removeHandler(keep)
        log.setLevel(level)
    upgrades = [line for line in seen if "WebSocket" in line]
    assert upgrades, seen
    assert all(minted not in line for line in seen), upgrades
