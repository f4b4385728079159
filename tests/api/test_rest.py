"""The session API's REST endpoints against a whole gateway: a session started, read,
listed, answered, approved and cancelled; every refusal a JSON 4xx that says what is
wrong; another caller's session the same 404 as one that does not exist."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio import sleep as anyio_sleep

from gateway.engine.planners.base import Answer, Turn
from gateway.engine.planners.scripted import ScriptedPlanner
from gateway.principal import Principal
from gateway.state.base import Stream
from tests.api.harness import Api, api_gateway, auth, clarify, reply, tool

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # module-wide, for `shared`


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with api_gateway(tmp_path) as running:
        yield running


@pytest.fixture(scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    """One gateway for the tests that look at one session each (the many cases of the
    refusals): a gateway per case would cost a second each."""
    async with api_gateway(tmp_path_factory.mktemp("shared")) as running:
        yield running


async def test_a_session_runs_in_the_background_and_is_read_back(api: Api) -> None:
    api.script(tool("echo__echo", text="hi"), reply("all done"))
    answer = await api.http.post(
        f"{api.base}/sessions", json={"message": "say hi"}, headers=auth("alice")
    )
    assert answer.status_code == 201
    created = answer.json()
    assert answer.headers["location"] == f"/sessions/{created['id']}"
    assert created["links"]["events"] == f"/events/{created['id']}"
    view = await api.until(created["id"], "completed")
    assert view["reply"] == "all done"
    assert [c["tool"] for c in view["calls"]] == ["echo__echo"]
    assert [e["kind"] for e in view["envelopes"]] == ["tool", "reply"]
    assert view["confidence"] == [0.9, 0.9]
    assert view["spent"]["turns"] == 2
    assert view["budgets"]["turns"] == 25
    assert view["updated"] >= view["created"]


async def test_the_listing_shows_the_callers_own_sessions_newest_first(api: Api) -> None:
    api.script(reply())
    mine = [await api.start("alice", message=f"task {n}") for n in range(3)]
    theirs = await api.start("bob")
    for session_id in [*mine, theirs]:
        await api.until(session_id, "completed", user="bob" if session_id == theirs else "alice")
    answer = await api.http.get(f"{api.base}/sessions", headers=auth("alice"))
    listed = [s["id"] for s in answer.json()["sessions"]]
    assert listed == mine[::-1]
    assert answer.json()["next"] is None
    # A page at a time, by cursor.
    pages: list[str] = []
    cursor = None
    for _ in range(5):
        query = {"limit": "1", **({"cursor": cursor} if cursor else {})}
        page = (
            await api.http.get(f"{api.base}/sessions", params=query, headers=auth("alice"))
        ).json()
        pages += [s["id"] for s in page["sessions"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert pages == mine[::-1]
    done = await api.http.get(
        f"{api.base}/sessions", params={"status": "failed"}, headers=auth("alice")
    )
    assert done.json()["sessions"] == []
    carol = await api.http.get(f"{api.base}/sessions", headers=auth("carol"))
    assert carol.json()["sessions"] == []


async def test_a_question_is_answered_once(api: Api) -> None:
    api.script(clarify("Which customer?"), reply("Maya it is"))
    session_id = await api.start()
    asked = await api.until(session_id, "input_required")
    assert asked["waiting"] == "question"
    assert asked["question"] == "Which customer?"
    url = f"{api.base}/sessions/{session_id}/interact"
    answered = await api.http.post(url, json={"message": "Maya"}, headers=auth("alice"))
    assert answered.status_code == 202, answered.text
    assert answered.json() == {"id": session_id, "status": "working"}
    done = await api.until(session_id, "completed")
    assert done["reply"] == "Maya it is"
    again = await api.http.post(url, json={"message": "Maya"}, headers=auth("alice"))
    assert again.status_code == 409
    assert again.json()["error"] == "already_ended"


async def test_input_while_the_session_works_is_refused(api: Api) -> None:
    api.script(tool("echo__sleep", seconds=3), reply())
    session_id = await api.start()
    await api.until(session_id, "working")
    url = f"{api.base}/sessions/{session_id}/interact"
    answer = await api.http.post(url, json={"message": "hurry"}, headers=auth("alice"))
    assert answer.status_code == 409
    assert answer.json()["error"] == "session_working"
    cancel = await api.http.post(f"{api.base}/sessions/{session_id}/cancel", headers=auth("alice"))
    assert cancel.status_code == 202


async def test_an_approval_is_decided(api: Api, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    api.script(tool("echo__pay", journal=str(journal)), reply("paid"))
    session_id = await api.start()
    held = await api.until(session_id, "input_required")
    assert held["waiting"] == "approval"
    approval = held["approval"]
    assert [call["tool"] for call in approval["calls"]] == ["echo__pay"]
    base = f"{api.base}/sessions/{session_id}/approvals"
    wrong = await api.http.post(f"{base}/0-1", json={"decision": "approve"}, headers=auth("alice"))
    assert wrong.status_code == 404
    assert not journal.exists()
    bad = await api.http.post(
        f"{base}/{approval['id']}", json={"decision": "maybe"}, headers=auth("alice")
    )
    assert bad.status_code == 422
    assert "decision" in bad.json()["detail"]
    ok = await api.http.post(
        f"{base}/{approval['id']}", json={"decision": "approve"}, headers=auth("alice")
    )
    assert ok.status_code == 202, ok.text
    done = await api.until(session_id, "completed")
    assert done["reply"] == "paid"
    assert journal.read_text() == "pay\n"
    late = await api.http.post(
        f"{base}/{approval['id']}", json={"decision": "approve"}, headers=auth("alice")
    )
    assert late.status_code == 409


async def test_a_rejected_approval_runs_nothing(api: Api, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    api.script(tool("echo__pay", journal=str(journal)), reply("not paid"))
    session_id = await api.start()
    held = await api.until(session_id, "input_required")
    url = f"{api.base}/sessions/{session_id}/approvals/{held['approval']['id']}"
    body = {"decision": "reject", "message": "not today"}
    assert (await api.http.post(url, json=body, headers=auth("alice"))).status_code == 202
    done = await api.until(session_id, "completed")
    assert done["reply"] == "not paid"
    assert not any(call["ok"] for call in done["calls"])
    assert not journal.exists()


async def test_a_waiting_session_is_cancelled_at_once(api: Api) -> None:
    api.script(clarify(), reply())
    session_id = await api.start()
    await api.until(session_id, "input_required")
    url = f"{api.base}/sessions/{session_id}/cancel"
    answer = await api.http.post(url, json={"mode": "immediate"}, headers=auth("alice"))
    assert answer.status_code == 202
    assert answer.json()["status"] == "canceled"
    ended = await api.get(session_id)
    assert ended["status"] == "canceled"
    assert ended["error"] == "cancelled by its caller"
    again = await api.http.post(url, headers=auth("alice"))
    assert again.status_code == 409


async def test_a_working_session_is_cancelled_in_its_call(api: Api) -> None:
    api.script(tool("echo__sleep", seconds=30), reply())
    session_id = await api.start()
    await api.until(session_id, "working")
    for _ in range(100):  # its call under way
        if (await api.get(session_id))["calls"] or await _intent(api, session_id):
            break
        await anyio_sleep(0.02)
    answer = await api.http.post(f"{api.base}/sessions/{session_id}/cancel", headers=auth("alice"))
    assert answer.status_code == 202
    ended = await api.until(session_id, "canceled")
    assert ended["error"] == "cancelled by its caller"


async def test_after_step_lets_the_call_under_way_finish(api: Api) -> None:
    api.script(tool("echo__sleep", seconds=0.5), tool("echo__echo"), reply())
    session_id = await api.start()
    for _ in range(200):
        if await _intent(api, session_id):
            break
        await anyio_sleep(0.01)
    url = f"{api.base}/sessions/{session_id}/cancel"
    answer = await api.http.post(url, json={"mode": "after_step"}, headers=auth("alice"))
    assert answer.status_code == 202
    ended = await api.until(session_id, "canceled")
    assert [c["tool"] for c in ended["calls"]] == ["echo__sleep"]
    assert ended["calls"][0]["ok"]
    assert "after the step" in ended["error"]


async def _intent(api: Api, session_id: str) -> bool:
    batch = await api.store.read(session_id, Stream.EVENTS, limit=1000)
    return any(event.data.get("type") == "intent" for event in batch.events)


ENDPOINTS = [
    ("POST", "/sessions", {"message": "x"}),
    ("GET", "/sessions", None),
    ("GET", "/sessions/{id}", None),
    ("POST", "/sessions/{id}/interact", {"message": "x"}),
    ("POST", "/sessions/{id}/approvals/1-0", {"decision": "approve"}),
    ("POST", "/sessions/{id}/cancel", {}),
    ("POST", "/tokens", {}),
    ("GET", "/events/{id}", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_every_endpoint_wants_a_credential(
    shared: Api, method: str, path: str, body: dict[str, str] | None
) -> None:
    shared.script(clarify())
    session_id = await shared.start()
    url = shared.base + path.format(id=session_id)
    for headers in ({}, {"Authorization": "Bearer not-a-key-at-all-0000"}):
        answer = await shared.http.request(method, url, json=body, headers=headers)
        assert answer.status_code == 401, (method, path, answer.text)
        assert answer.json()["error"] == "unauthorized"
        assert answer.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path", "body"), [e for e in ENDPOINTS if "{id}" in e[1]])
async def test_another_callers_session_is_as_unknown_as_none(
    shared: Api, method: str, path: str, body: dict[str, str] | None
) -> None:
    shared.script(clarify())
    session_id = await shared.start("alice")
    await shared.until(session_id, "input_required")
    unknown = "s_" + "x" * (len(session_id) - 2)
    answers = []
    for user, target in (("carol", session_id), ("bob", session_id), ("carol", unknown)):
        url = shared.base + path.format(id=target)
        answer = await shared.http.request(method, url, json=body, headers=auth(user))
        answers.append((answer.status_code, answer.text.replace(target, "ID")))
    assert answers[0] == answers[1] == answers[2], answers
    assert answers[0][0] == 404
    still = await shared.get(session_id)
    assert still["status"] == "input_required"  # nothing the others sent reached it


@pytest.mark.parametrize(
    ("content", "kind", "status", "code"),
    [
        (b"{not json", "application/json", 400, "invalid_json"),
        (b'{"message": "x", "colour": "red"}', "application/json", 422, "invalid_body"),
        (b'{"message": 5}', "application/json", 422, "invalid_body"),
        (b"[1, 2]", "application/json", 422, "invalid_body"),
        (b'{"message": "x"}', "text/plain", 415, "unsupported_media_type"),
        (b'{"message": "' + b"x" * 300_000 + b'"}', "application/json", 413, "body_too_large"),
        (b"{}", "application/json", 422, "invalid_body"),
        (b'{"flow": "nope"}', "application/json", 422, "unknown_flow"),
        (b'{"message": "\\ud800"}', "application/json", 400, "invalid_json"),
    ],
)
async def test_bad_input_gets_a_clear_4xx(
    shared: Api, content: bytes, kind: str, status: int, code: str
) -> None:
    headers = {**auth("alice"), "Content-Type": kind}
    answer = await shared.http.post(f"{shared.base}/sessions", content=content, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == code
    assert answer.json()["detail"]


async def test_unknown_routes_and_methods_answer_json(shared: Api) -> None:
    missing = await shared.http.get(f"{shared.base}/nowhere", headers=auth("alice"))
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    wrong = await shared.http.delete(f"{shared.base}/sessions", headers=auth("alice"))
    assert wrong.status_code == 405
    assert wrong.json()["error"] == "method_not_allowed"
    query = await shared.http.get(
        f"{shared.base}/sessions", params={"limit": "0"}, headers=auth("alice")
    )
    assert query.status_code == 400


async def test_health_readiness_metrics_and_openapi(api: Api) -> None:
    api.script(reply())
    await api.until(await api.start(), "completed")
    assert (await api.http.get(f"{api.base}/healthz")).json() == {"status": "ok"}
    ready = (await api.http.get(f"{api.base}/readyz")).json()
    assert ready["ready"] is True
    assert ready["upstreams"]
    metrics = (await api.http.get(f"{api.base}/metrics")).text
    assert 'gateway_http_requests_total{method="POST",route="/sessions",status="201"}' in metrics
    assert 'gateway_session_transitions_total{to="completed"}' in metrics
    spec = (await api.http.get(f"{api.base}/openapi.json")).json()
    assert set(spec["paths"]) >= {"/sessions", "/sessions/{session_id}", "/events/{session_id}"}


async def test_a_filtered_listing_goes_on_by_cursor_past_what_it_did_not_show(api: Api) -> None:
    api.script(clarify(), reply())
    oldest = await api.start()
    await api.until(oldest, "input_required")
    cancel = await api.http.post(f"{api.base}/sessions/{oldest}/cancel", headers=auth("alice"))
    assert cancel.status_code == 202
    for _ in range(12):  # newer, and not what the filter asks for
        await api.until(await api.start(), "input_required")
    shown: list[str] = []
    query = {"status": "canceled", "limit": "1"}
    for _ in range(5):
        page = (
            await api.http.get(f"{api.base}/sessions", params=query, headers=auth("alice"))
        ).json()
        shown += [s["id"] for s in page["sessions"]]
        if page["next"] is None:
            break
        query["cursor"] = page["next"]
    assert shown == [oldest]


async def test_an_answer_names_its_question_and_a_stale_one_is_refused(api: Api) -> None:
    api.script(clarify("First?"), clarify("Second?"), reply())
    session_id = await api.start()
    first = await api.until(session_id, "input_required")
    url = f"{api.base}/sessions/{session_id}/interact"
    body = {"message": "one", "question": first["last_event"]}
    assert (await api.http.post(url, json=body, headers=auth("alice"))).status_code == 202
    for _ in range(500):  # the second question, on a newer event
        second = await api.get(session_id)
        if second["status"] == "input_required" and second["last_event"] != first["last_event"]:
            break
        await anyio_sleep(0.02)
    late = await api.http.post(url, json=body, headers=auth("alice"))  # meant for the first
    assert late.status_code == 409
    assert late.json()["error"] == "not_waiting"
    body = {"message": "two", "question": second["last_event"]}
    assert (await api.http.post(url, json=body, headers=auth("alice"))).status_code == 202
    assert (await api.until(session_id, "completed"))["reply"] == "done"


async def test_an_answer_sent_as_soon_as_the_session_asks_is_taken(api: Api) -> None:
    """The engine that asked still holds the session for a moment after its state says
    it waits: an answer sent then waits for it to let go, rather than being refused."""
    api.script(clarify(), reply())
    for _ in range(10):
        session_id = await api.start()
        await api.until(session_id, "input_required")
        answer = await api.http.post(
            f"{api.base}/sessions/{session_id}/interact",
            json={"message": "now"},
            headers=auth("alice"),
        )
        assert answer.status_code == 202, answer.text
        await api.until(session_id, "completed")


async def test_a_foreign_host_is_misdirected_but_probes_answer_any(shared: Api) -> None:
    """A page on a name that resolves to the gateway (DNS rebinding) gets nothing."""
    headers = {**auth("alice"), "Host": "evil.example"}
    answer = await shared.http.get(f"{shared.base}/sessions", headers=headers)
    assert answer.status_code == 421
    assert answer.json()["error"] == "misdirected"
    page = await shared.http.get(f"{shared.base}/", headers={"Host": "evil.example"})
    assert page.status_code == 421
    probe = await shared.http.get(f"{shared.base}/healthz", headers={"Host": "10.1.2.3:8080"})
    assert probe.status_code == 200


class Gated(ScriptedPlanner):
    """The script, each turn held until the test opens the gate."""

    def __init__(self, envelopes: list[dict[str, Any]]) -> None:
        super().__init__(envelopes)
        self.gate = anyio.Event()
        self.entered = anyio.Event()

    async def decide(self, turn: Turn) -> Answer:
        self.entered.set()
        with anyio.fail_after(10):
            await self.gate.wait()
        return await super().decide(turn)


async def test_after_step_asked_during_a_turn_that_asks_ends_the_session(api: Api) -> None:
    """The turn under way ends in a question: the session stops there instead of asking
    (and a later run would not go on either)."""
    planner = Gated([clarify("Which?"), reply("ok")])
    api.runtime.engine.turns.planner = planner
    session_id = await api.start()
    with anyio.fail_after(5):
        await planner.entered.wait()
    url = f"{api.base}/sessions/{session_id}/cancel"
    answer = await api.http.post(url, json={"mode": "after_step"}, headers=auth("alice"))
    assert answer.status_code == 202
    planner.gate.set()
    ended = await api.until(session_id, "canceled", "input_required")
    assert ended["status"] == "canceled"


async def test_a_cancel_of_a_session_that_began_to_wait_meanwhile_still_ends_it(
    api: Api,
) -> None:
    """Read working, then it asks before the cancel takes it: the cancel goes after it
    as it is now and ends it, rather than leaving a request behind for a later run."""
    planner = Gated([clarify("Which?"), reply("ok")])
    engine = api.runtime.engine
    engine.turns.planner = planner
    session_id = await api.start()
    with anyio.fail_after(5):
        await planner.entered.wait()
    snapshot = await api.store.get_session_state(session_id)
    assert snapshot is not None
    stale = engine.restored(snapshot, api.runtime.tags.resolve(Principal("alice", "acme"), None))
    planner.gate.set()
    await api.until(session_id, "input_required")
    await engine.cancel(stale, "immediate")
    assert (await api.get(session_id))["status"] == "canceled"
