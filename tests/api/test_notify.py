"""A session's callback_url is told of its questions and its end, signed with the org's
secret; a callback the org's allow-list does not hold is refused when the session starts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from gateway.api.notify import ORG_AT_ONCE, Notifier
from gateway.api.webhooks import Webhooks, WebhookSettings, verify
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
        ("alice", "http://10.1.2.3/hook", "private address"),
        ("alice", "not a url", "whitespace"),
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


async def test_an_orgs_slow_receiver_does_not_hold_up_another_orgs(receiver: Receiver) -> None:
    """Twenty of acme's notifications to a receiver that takes its time, then one of
    globex's: globex's goes out next, while acme's wait in acme's own lane (with one lane
    for all, it would wait behind as many of acme's as may be sent at once)."""
    orgs = {org: {"secret_env": "HOOKS", "allow": ["127.0.0.1/32"]} for org in ("acme", "globex")}
    settings = WebhookSettings.model_validate({"orgs": orgs, "attempts": 1, "timeout": 5})
    receiver.delays = [1.0] * 20  # acme's answers take a second each
    async with Webhooks(settings, environ={"HOOKS": SECRET}) as hooks:
        notifier = Notifier(hooks)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(notifier.run)
            await until(lambda: notifier._send is not None, 5)
            for n in range(20):
                body = {"session_id": f"a{n}"}
                assert notifier.queue(("acme", receiver.url(), f"msg_a{n:031d}", body))
            await until(lambda: len(receiver.requests) >= ORG_AT_ONCE, 5)  # acme's lane full
            assert notifier.queue(("globex", receiver.url(), f"msg_g{0:031d}", {"session_id": "g"}))
            await until(lambda: any(b'"g"' in r.body for r in receiver.requests), 10)
            first = next(n for n, r in enumerate(receiver.requests) if b'"g"' in r.body)
            assert first == ORG_AT_ONCE  # right after acme's lane filled
            tasks.cancel_scope.cancel()
