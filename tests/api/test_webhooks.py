"""Signed webhooks: signatures, retries, the SSRF guard and the settings' errors, against a
real receiver on the loopback interface."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from aiohttp import web
from pydantic import ValidationError

from gateway.api.targets import _public
from gateway.api.webhooks import (
    Delivery,
    Webhooks,
    WebhookSettings,
    signing_key,
    verify,
)
from gateway.errors import ConfigError
from tests.redis_server import free_port

pytestmark = pytest.mark.anyio

SECRET = "webhook-secret-" + "x" * 32
KEY = SECRET.encode()
EVENT = {"type": "session.finished", "session": "s-1", "text": "été ✓"}
STEP = 5.0
"""The bound on every wait of the receiver's start and stop and of each delivery."""


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """Records every request; answers from `script` in order, then 200."""

    port: int
    requests: list[Received] = field(default_factory=list)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)

    def url(self, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}/hook?token=t0ps3cret"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(Received(request.path, dict(request.headers), body, time.monotonic()))
        if self.delays:
            await anyio.sleep(self.delays.pop(0))
        status, headers = self.script.pop(0) if self.script else (200, {})
        return web.Response(status=status, headers=headers, text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver(free_port())
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rx.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    with anyio.fail_after(STEP):
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", rx.port).start()
    try:
        yield rx
    finally:
        with anyio.fail_after(STEP):
            await runner.cleanup()


def settings(*allow: str, https_only: bool = True, **gateway: Any) -> WebhookSettings:
    org = {"secret_env": "HOOK_SECRET", "allow": list(allow), "https_only": https_only}
    base = {"backoff": 0.01, "max_backoff": 0.05, "timeout": 2, "attempts": 4}
    return WebhookSettings.model_validate({"orgs": {"acme": org}, **base, **gateway})


def webhooks(*allow: str, https_only: bool = True, **gateway: Any) -> Webhooks:
    return Webhooks(
        settings(*allow, https_only=https_only, **gateway), environ={"HOOK_SECRET": SECRET}
    )


async def deliver(hooks: Webhooks, url: str, **kwargs: Any) -> Delivery:
    async with hooks:
        with anyio.fail_after(STEP):
            return await hooks.deliver("acme", url, EVENT, **kwargs)


# --- signing ---------------------------------------------------------------------------------


async def test_a_notification_is_signed_as_standard_webhooks_say(receiver: Receiver) -> None:
    delivery = await deliver(webhooks("127.0.0.1/32"), receiver.url())
    assert delivery == Delivery(True, 1, 200, None, delivery.id)
    assert delivery.id.startswith("msg_")
    [got] = receiver.requests
    assert got.body == json.dumps(EVENT, separators=(",", ":"), ensure_ascii=False).encode()
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["User-Agent"] == "mcp-tag-gateway"
    assert got.headers["Webhook-Id"] == delivery.id
    stamp = got.headers["Webhook-Timestamp"]
    assert abs(int(stamp) - time.time()) < 5
    content = f"{delivery.id}.{stamp}.".encode() + got.body
    expected = base64.b64encode(hmac.new(KEY, content, hashlib.sha256).digest()).decode()
    assert got.headers["Webhook-Signature"] == f"v1,{expected}"

    assert verify(KEY, got.headers, got.body)
    lowered = {name.lower(): value for name, value in got.headers.items()}
    assert verify(KEY, lowered, got.body)
    rotated = {**got.headers, "Webhook-Signature": f"v1,AAAA {got.headers['Webhook-Signature']}"}
    assert verify(KEY, rotated, got.body)


async def test_a_tampered_stale_or_foreign_notification_fails_verification(
    receiver: Receiver,
) -> None:
    await deliver(webhooks("127.0.0.1/32"), receiver.url())
    [got] = receiver.requests
    stamp = int(got.headers["Webhook-Timestamp"])
    assert not verify(KEY, got.headers, got.body.replace(b"s-1", b"s-2"))
    assert not verify(KEY, got.headers, got.body, now=stamp + 301)
    assert not verify(KEY, got.headers, got.body, now=stamp - 301)
    assert verify(KEY, got.headers, got.body, now=stamp + 299)
    assert not verify(b"another-secret-" + b"y" * 32, got.headers, got.body)
    assert not verify(KEY, {**got.headers, "Webhook-Id": "msg_other"}, got.body)
    assert not verify(KEY, {**got.headers, "Webhook-Timestamp": f"{stamp}.0"}, got.body)
    assert not verify(KEY, {**got.headers, "Webhook-Timestamp": "9" * 5000}, got.body)
    signature = got.headers["Webhook-Signature"]
    assert not verify(KEY, {**got.headers, "Webhook-Signature": signature[3:]}, got.body)
    for missing in ("Webhook-Id", "Webhook-Timestamp", "Webhook-Signature"):
        headers = {k: v for k, v in got.headers.items() if k != missing}
        assert not verify(KEY, headers, got.body)


async def test_a_whsec_secret_signs_with_its_decoded_bytes(receiver: Receiver) -> None:
    raw = bytes(range(32))
    secret = "whsec_" + base64.b64encode(raw).decode()
    assert signing_key(secret) == raw
    hooks = Webhooks(settings("127.0.0.1/32"), environ={"HOOK_SECRET": secret})
    assert (await deliver(hooks, receiver.url())).ok
    [got] = receiver.requests
    assert verify(raw, got.headers, got.body)
    assert not verify(secret.encode(), got.headers, got.body)


# --- retries ---------------------------------------------------------------------------------


async def test_500s_are_retried_under_the_same_id_until_success(receiver: Receiver) -> None:
    receiver.script = [(500, {}), (502, {})]
    delivery = await deliver(webhooks("127.0.0.1/32"), receiver.url())
    assert delivery == Delivery(True, 3, 200, None, delivery.id)
    assert [r.headers["Webhook-Id"] for r in receiver.requests] == [delivery.id] * 3
    assert all(verify(KEY, r.headers, r.body) for r in receiver.requests)


async def test_a_given_id_is_kept_and_a_bad_one_refused(receiver: Receiver) -> None:
    delivery = await deliver(webhooks("127.0.0.1/32"), receiver.url(), webhook_id="s-1:7")
    assert delivery.id == "s-1:7"
    assert receiver.requests[0].headers["Webhook-Id"] == "s-1:7"
    with pytest.raises(ValueError, match="webhook id"):
        await deliver(webhooks("127.0.0.1/32"), receiver.url(), webhook_id="a\r\nX-Evil: 1")


async def test_a_400_is_not_retried(receiver: Receiver) -> None:
    receiver.script = [(400, {})]
    delivery = await deliver(webhooks("127.0.0.1/32"), receiver.url())
    assert delivery == Delivery(False, 1, 400, "HTTP 400", delivery.id)
    assert len(receiver.requests) == 1


async def test_delivery_gives_up_after_the_attempts(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.script = [(503, {})] * 10
    with caplog.at_level(logging.WARNING, logger="gateway.api.webhooks"):
        delivery = await deliver(webhooks("127.0.0.1/32", attempts=3), receiver.url())
    assert delivery == Delivery(False, 3, 503, "HTTP 503", delivery.id)
    assert len(receiver.requests) == 3
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "acme" in message
    assert "127.0.0.1" in message
    assert SECRET not in message
    assert "t0ps3cret" not in message
    assert "session.finished" not in message


async def test_a_429_waits_for_its_retry_after(receiver: Receiver) -> None:
    receiver.script = [(429, {"Retry-After": "0.3"})]
    delivery = await deliver(webhooks("127.0.0.1/32", max_backoff=1), receiver.url())
    assert (delivery.ok, delivery.attempts) == (True, 2)
    first, second = receiver.requests
    assert second.at - first.at >= 0.29


@pytest.mark.parametrize("after", ["120", "Wed, 21 Oct 2015 07:28:00 GMT", "soon"])
async def test_a_retry_after_is_capped_or_ignored(receiver: Receiver, after: str) -> None:
    receiver.script = [(429, {"Retry-After": after})]
    started = time.monotonic()
    delivery = await deliver(webhooks("127.0.0.1/32", max_backoff=0.05), receiver.url())
    assert (delivery.ok, delivery.attempts) == (True, 2)
    assert time.monotonic() - started < 1


async def test_a_redirect_is_a_failure_not_followed(receiver: Receiver) -> None:
    receiver.script = [(302, {"Location": f"http://127.0.0.1:{receiver.port}/elsewhere"})]
    delivery = await deliver(webhooks("127.0.0.1/32"), receiver.url())
    assert (delivery.ok, delivery.attempts, delivery.status) == (False, 1, 302)
    assert [r.path for r in receiver.requests] == ["/hook"]


async def test_a_slow_answer_times_out_and_is_retried(receiver: Receiver) -> None:
    # Only the first answer is slow: a second well within its timeout, however busy the
    # machine (a timeout close to the answer's time would make the retry time out too).
    receiver.delays = [3.0]
    delivery = await deliver(webhooks("127.0.0.1/32", timeout=1.0), receiver.url())
    assert (delivery.ok, delivery.attempts) == (True, 2)


async def test_a_closed_port_is_retried_then_given_up() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    delivery = await deliver(webhooks("127.0.0.1/32", attempts=3), url)
    assert (delivery.ok, delivery.attempts, delivery.status) == (False, 3, None)
    assert delivery.error is not None
    assert "connect" in delivery.error.lower()


async def test_an_oversized_notification_is_not_sent(receiver: Receiver) -> None:
    hooks = webhooks("127.0.0.1/32", max_body=1024)
    async with hooks:
        delivery = await hooks.deliver("acme", receiver.url(), {"text": "x" * 2000})
    assert (delivery.ok, delivery.attempts) == (False, 0)
    assert "max_body" in (delivery.error or "")
    assert receiver.requests == []


# --- the SSRF guard --------------------------------------------------------------------------


async def test_a_name_resolving_to_a_private_address_is_refused(receiver: Receiver) -> None:
    hooks = webhooks(f"localhost:{receiver.port}", https_only=False)
    url = receiver.url("localhost")
    assert hooks.check_target("acme", url) is None  # by name it is allowed
    delivery = await deliver(hooks, url)
    assert delivery == Delivery(
        False, 1, None, "refused: localhost resolves to a private address", delivery.id
    )
    assert receiver.requests == []


async def test_a_private_address_inside_an_allowed_network_is_reached(
    receiver: Receiver,
) -> None:
    hooks = webhooks(f"localhost:{receiver.port}", "127.0.0.1/32", https_only=False)
    delivery = await deliver(hooks, receiver.url("localhost"))
    assert (delivery.ok, delivery.attempts) == (True, 1)
    assert len(receiver.requests) == 1


async def test_a_private_ip_literal_is_refused_unless_in_a_network(receiver: Receiver) -> None:
    hooks = webhooks(f"localhost:{receiver.port}", "10.0.0.0/8", https_only=False)
    reason = hooks.check_target("acme", receiver.url())
    assert reason == (
        "callback_url names the private address 127.0.0.1, which is not in the org's "
        "webhook networks"
    )
    delivery = await deliver(hooks, receiver.url())
    assert (delivery.ok, delivery.attempts, delivery.error) == (False, 0, reason)
    mapped = f"http://[::ffff:127.0.0.1]:{receiver.port}/hook"
    assert hooks.check_target("acme", mapped) is not None
    assert webhooks("127.0.0.0/8").check_target("acme", mapped) is None
    assert receiver.requests == []


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "240.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fd00::1",
        "ff02::1",
        "::ffff:10.0.0.1",
        "64:ff9b::a00:1",
        "2002:a00:1::",
    ],
)
def test_non_public_addresses_are_recognised(address: str) -> None:
    assert not _public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_recognised(address: str) -> None:
    assert _public(ipaddress.ip_address(address))


# --- check_target ----------------------------------------------------------------------------

ALLOW = ("hooks.example.com", "*.example.org", "ports.example.com:8443", "10.0.0.0/8")
NOT_LISTED = "host {} is not in the org's webhook allow-list"
NOT_HTTP = "callback_url must be an absolute http or https URL"
USERINFO = "callback_url must not carry credentials (user:password@)"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://hooks.example.com/cb", None),
        ("https://HOOKS.Example.com./cb", None),
        ("https://a.b.example.org/cb", None),
        ("https://ports.example.com:8443/cb", None),
        ("http://10.1.2.3:9000/cb", None),
        ("https://evil.example.net/cb", NOT_LISTED.format("evil.example.net")),
        ("https://example.org/cb", NOT_LISTED.format("example.org")),
        ("https://ports.example.com/cb", NOT_LISTED.format("ports.example.com")),
        ("https://hooks.example.com:8443/", NOT_LISTED.format("hooks.example.com:8443")),
        ("https://8.8.8.8/cb", NOT_LISTED.format("8.8.8.8")),
        ("http://hooks.example.com/cb", "callback_url must be https"),
        ("not-a-url", NOT_HTTP),
        ("ftp://hooks.example.com/", NOT_HTTP),
        ("https:///cb", NOT_HTTP),
        ("https://user:pw@hooks.example.com/", USERINFO),
        ("https://user@hooks.example.com/", USERINFO),
        ("https://hooks.example.com/a b", "callback_url contains whitespace or control characters"),
        ("https://hooks.example.com:0/", "callback_url has no valid host and port"),
        ("https://" + "a" * 3000, "callback_url is longer than 2048 characters"),
    ],
)
def test_check_target_says_why(url: str, reason: str | None) -> None:
    assert webhooks(*ALLOW).check_target("acme", url) == reason


def test_check_target_reasons_needing_more_words() -> None:
    hooks = webhooks(*ALLOW)
    malformed = hooks.check_target("acme", "https://hooks.example.com:99999/")
    assert malformed is not None
    assert malformed.startswith("callback_url is malformed")
    assert hooks.check_target("nobody", "https://hooks.example.com/") == (
        "the org nobody allows no webhooks"
    )
    assert webhooks().check_target("acme", "https://hooks.example.com/") == (
        "the org acme allows no webhooks"
    )
    plain = webhooks(*ALLOW, https_only=False)
    assert plain.check_target("acme", "http://hooks.example.com/cb") is None


# --- settings --------------------------------------------------------------------------------


def test_settings_read_from_yaml_shapes_with_their_defaults() -> None:
    parsed = WebhookSettings.model_validate(
        {"orgs": {"acme": {"secret_env": "S", "allow": ["a.example.com"]}}, "backoff": 1}
    )
    assert parsed.orgs["acme"].allow == ("a.example.com",)
    assert parsed.orgs["acme"].https_only is True
    assert (parsed.attempts, parsed.backoff, parsed.max_backoff, parsed.timeout) == (
        5,
        1.0,
        30.0,
        10.0,
    )
    assert parsed.max_body == 1024 * 1024


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("10.0.0.1/8", "not an IP network"),
        ("*.", "neither a host name"),
        ("a b.example.com", "neither a host name"),
        ("*", "neither a host name"),
        ("hooks.example.com:0", "no valid port"),
        ("hooks.example.com:https", "no valid port"),
        ("127.0.0.1:8080", "takes no port"),
    ],
)
def test_a_bad_allow_entry_is_a_settings_error(entry: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        settings(entry)


@pytest.mark.parametrize(
    "gateway",
    [{"attempts": 0}, {"attempts": 21}, {"backoff": 2, "max_backoff": 1}, {"timeout": 0}],
)
def test_out_of_range_gateway_settings_are_errors(gateway: Mapping[str, Any]) -> None:
    with pytest.raises(ValidationError):
        settings("a.example.com", **gateway)


def test_a_missing_or_short_secret_names_the_org_and_variable() -> None:
    both = WebhookSettings.model_validate(
        {
            "orgs": {
                "acme": {"secret_env": "ACME_HOOKS", "allow": ["a.example.com"]},
                "beta": {"secret_env": "BETA_HOOKS", "allow": ["b.example.com"]},
                "gamma": {"secret_env": "GAMMA_HOOKS", "allow": ["c.example.com"]},
            }
        }
    )
    with pytest.raises(ConfigError) as caught:
        Webhooks(both, environ={"BETA_HOOKS": "short", "GAMMA_HOOKS": "whsec_!!"})
    issues = [str(issue) for issue in caught.value.issues]
    assert issues == [
        "gateway.yaml: webhooks.orgs.acme.secret_env: environment variable ACME_HOOKS "
        "(org acme's webhook secret) is not set",
        "gateway.yaml: webhooks.orgs.beta.secret_env: org beta's webhook secret in "
        "BETA_HOOKS is shorter than 32 bytes",
        "gateway.yaml: webhooks.orgs.gamma.secret_env: org gamma's webhook secret in "
        "GAMMA_HOOKS starts whsec_ but is not base64",
    ]
    short = "whsec_" + base64.b64encode(b"z" * 31).decode()
    with pytest.raises(ConfigError, match="shorter than 32 bytes"):
        Webhooks(settings("a.example.com"), environ={"HOOK_SECRET": short})


def test_the_secret_is_read_from_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HOOK_SECRET", raising=False)
    with pytest.raises(ConfigError, match="HOOK_SECRET"):
        Webhooks(settings("a.example.com"))
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    assert (
        Webhooks(settings("a.example.com")).check_target("acme", "https://a.example.com/") is None
    )


async def test_a_broken_answer_is_reported_without_the_urls_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiohttp's error for a malformed status line holds the URL (a receiver's secret
    path) and the bytes it got: neither reaches the delivery's error or the log."""

    async def broken(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            with anyio.move_on_after(STEP):
                await stream.receive()
                await stream.send(b"HTTP/1.1 2x0 BROKEN\r\nX: line\r\n\r\n")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, broken)
        hooks = webhooks("127.0.0.1/32", https_only=False, attempts=1)
        with caplog.at_level(logging.WARNING):
            done = await deliver(hooks, f"http://127.0.0.1:{port}/hook/SECRET-PATH-TOKEN")
        tasks.cancel_scope.cancel()
    assert not done.ok
    assert done.error
    assert "SECRET-PATH-TOKEN" not in done.error
    assert "SECRET-PATH-TOKEN" not in caplog.text
