"""A session's callback_url is told of its questions and its end, signed with the org's
secret; a callback the org's allow-list does not hold is refused when the session starts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.api.webhooks import verify
from tests.api.harness import Api, api_gateway, auth, clarify, reply
from tests.api.test_webhooks import Receiver, receiver
from tests.helpers import until

pytestmark = pytest.mark.anyio

__all__ = ["receiver"]  # the fixture, used here

SECRET = "acme-hooks-secret-" + "y" * 32
CONFIG = """
api:
  webhooks:
    backoff: 0.01
    max_backoff: 0.05
    orgs:
      acme: {secret_env: GATEWAY_TEST_HOOKS, allow: ["127.0.0.1/32", "hooks.example.com"]}
"""


@pytest.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    monkeypatch.setenv("GATEWAY_TEST_HOOKS", SECRET)
    async with api_gateway(tmp_path, CONFIG) as running:
        yield running


async def test_the_callback_is_told_of_the_question_and_the_end(
    api: Api, receiver: Receiver
) -> None:
    api.script(clarify("Which one?"), reply("that one"))
    url = receiver.url()
    session_id = await api.start(callback_url=url)
    await api.until(session_id, "input_required")
    await until(lambda: bool(receiver.requests), 10)
    asked = receiver.requests[0]
    assert verify(SECRET.encode(), asked.headers, asked.body)
    told = json.loads(asked.body)
    assert told["type"] == "session.input_required"
    assert told["session_id"] == session_id
    assert told["question"] == "Which one?"
    answered = await api.http.post(
        f"{api.base}/sessions/{session_id}/interact", json={"message": "x"}, headers=auth("alice")
    )
    assert answered.status_code == 202
    await api.until(session_id, "completed")
    await until(lambda: len(receiver.requests) >= 2, 10)
    ended = json.loads(receiver.requests[1].body)
    assert ended["type"] == "session.completed"
    assert ended["reply"] == "that one"
    ids = {r.headers["Webhook-Id"] for r in receiver.requests}
    assert len(ids) == 2


@pytest.mark.parametrize(
    ("user", "url", "says"),
    [
        ("alice", "https://elsewhere.example.org/hook", "allow-list"),
        ("alice", "http://10.1.2.3/hook", ""),
        ("alice", "not a url", ""),
        ("carol", "https://hooks.example.com/hook", "no webhooks"),
    ],
)
async def test_a_callback_outside_the_allow_list_is_refused(
    api: Api, user: str, url: str, says: str
) -> None:
    api.script(reply())
    answer = await api.http.post(
        f"{api.base}/sessions", json={"message": "x", "callback_url": url}, headers=auth(user)
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "invalid_callback"
    assert says in answer.json()["detail"]
    listed = await api.http.get(f"{api.base}/sessions", headers=auth(user))
    assert listed.json()["sessions"] == []  # nothing was started
