"""Signed webhooks: the session API's notifications to a caller's `callback_url`.

A caller creating a session may name a `callback_url`; the gateway then POSTs a JSON
notification there on every terminal state, question and approval request.

Where a notification may go (the SSRF guard) is decided, and explained, in `targets`.

Signing follows Standard Webhooks (https://www.standardwebhooks.com/), so its receiver
libraries verify our notifications:

    Webhook-Id:        msg_<32 hex digits>, the same on every retry of one notification
    Webhook-Timestamp: unix seconds of this attempt (each retry is signed afresh, so a
                       late retry is not mistaken for a replay)
    Webhook-Signature: v1,<base64 of HMAC-SHA256(key, f"{id}.{timestamp}.".encode() + body)>

The body is compact UTF-8 JSON. The key is the org's secret (`secret_env` names the
environment variable, at least 32 bytes): its UTF-8 bytes, or, for Standard Webhooks'
serialized form `whsec_<base64>`, the decoded bytes (`signing_key`). Receivers check a
notification with `verify`, which also refuses one older than five minutes.

Failed attempts are retried with capped exponential backoff and jitter (connection errors,
timeouts, 5xx, and 429 after its Retry-After); other answers, and a refused target, are
final.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import os
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Annotated, Any, Final

import aiohttp
import anyio
from pydantic import Field, field_validator, model_validator
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from .. import jsoncodec
from ..auth import NAME
from ..errors import ConfigError, ConfigIssue
from ..strict import Strict
from .targets import NETWORKS, GuardedResolver, Refused, Targets, host_of, parse_entry, reason

logger = logging.getLogger(__name__)

ID_HEADER: Final = "Webhook-Id"
TIMESTAMP_HEADER: Final = "Webhook-Timestamp"
SIGNATURE_HEADER: Final = "Webhook-Signature"
USER_AGENT: Final = "mcp-tag-gateway"
MIN_SECRET_BYTES: Final = 32

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


class OrgWebhooks(Strict):
    secret_env: Annotated[str, Field(pattern=_ENV_NAME)]
    """The environment variable that holds the org's signing secret (32 bytes or more, or
    `whsec_<base64>` of as many): receivers verify notifications with it."""
    allow: Annotated[tuple[str, ...], Field(strict=False)] = ()
    """Where the org's notifications may go: `host`, `*.domain` (its subdomains, not the
    domain itself), either with an optional `:port` (without one, only the scheme's
    default port), and IP networks (`10.0.0.0/8`, any port). Empty: no webhooks."""
    https_only: bool = True
    """Refuse plain http, except to an IP literal inside one of the allowed networks."""

    @field_validator("allow")
    @classmethod
    def _valid_entries(cls, entries: tuple[str, ...]) -> tuple[str, ...]:
        for entry in entries:
            parse_entry(entry)
        return entries


class WebhookSettings(Strict):
    orgs: dict[Annotated[str, Field(pattern=NAME)], OrgWebhooks] = Field(default_factory=dict)
    """Keyed by org id; an org not listed gets no webhooks."""
    attempts: Annotated[int, Field(ge=1, le=20)] = 5
    """Tries per notification, the first included."""
    backoff: Annotated[float, Field(ge=0, le=60, strict=False)] = 0.5
    """Seconds before the first retry; each later wait doubles, plus up to as much jitter."""
    max_backoff: Annotated[float, Field(ge=0, le=3600, strict=False)] = 30.0
    """The longest wait between attempts, a receiver's Retry-After included."""
    timeout: Annotated[float, Field(gt=0, le=300, strict=False)] = 10.0
    """Seconds per attempt, from connecting to the response's status."""
    max_body: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 1024 * 1024
    """A notification larger than this many bytes is not sent."""

    @model_validator(mode="after")
    def _ordered(self) -> WebhookSettings:
        if self.max_backoff < self.backoff:
            raise ValueError("max_backoff must be at least backoff")
        return self


@dataclass(frozen=True, slots=True)
class Delivery:
    """How one notification went."""

    ok: bool
    attempts: int
    """Requests sent or tried (0: refused before any)."""
    status: int | None
    """The last HTTP status, if any answer came."""
    error: str | None
    """Why it failed: safe to log and to show the org (no secret, no URL path)."""
    id: str
    """The Webhook-Id it carried."""


def signing_key(secret: str) -> bytes:
    """The HMAC key a secret stands for: `whsec_<base64>` decoded, else its UTF-8 bytes.
    Raises ValueError for a `whsec_` secret that is not base64."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    return secret.encode()


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The Webhook-Signature value for one attempt."""
    content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify(
    secret: bytes,
    headers: Mapping[str, str],
    body: bytes,
    tolerance: float = 300,
    now: float | None = None,
) -> bool:
    """Whether a received notification is ours and fresh: for receivers (and the tests).

    `secret` is the key (`signing_key` of the org's secret), `body` the raw bytes as
    received (parsing and re-serializing changes them). Header names are matched in any
    case. The timestamp must lie within `tolerance` seconds of `now` either way, so a
    captured request cannot be replayed later; any of the space-separated `v1,`
    signatures may match, as Standard Webhooks allows several during a key rotation."""
    lowered = {name.lower(): value for name, value in headers.items()}
    webhook_id = lowered.get(ID_HEADER.lower())
    stamp = lowered.get(TIMESTAMP_HEADER.lower())
    signatures = lowered.get(SIGNATURE_HEADER.lower())
    if not webhook_id or not signatures or not stamp:
        return False
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        return False
    timestamp = int(stamp)
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, webhook_id, timestamp, body).encode()
    return any(
        hmac.compare_digest(candidate.encode(), expected)
        for candidate in signatures.split()
        if candidate.startswith("v1,")
    )


class Webhooks:
    """Delivers one gateway's notifications, under one version of its settings (replace
    it, do not mutate it, when they change). Holds one HTTP client session, opened at the
    first delivery: close it with `aclose` or `async with`."""

    def __init__(
        self,
        settings: WebhookSettings,
        environ: Mapping[str, str] | None = None,
        display: str = "gateway.yaml",
    ) -> None:
        """Raises ConfigError naming each org whose secret is missing, short or malformed."""
        self.settings = settings
        env = os.environ if environ is None else environ
        self._orgs: dict[str, _Org] = {}
        issues: list[ConfigIssue] = []
        for org_id, org in settings.orgs.items():
            key, problem = _secret(org_id, org.secret_env, env)
            if problem is not None:
                field = f"webhooks.orgs.{org_id}.secret_env"
                issues.append(ConfigIssue(display, problem, field=field))
                continue
            self._orgs[org_id] = _Org(key, Targets.parse(org.allow, org.https_only))
        if issues:
            raise ConfigError(issues)
        self._session: aiohttp.ClientSession | None = None
        self._resolver: GuardedResolver | None = None

    def check_target(self, org: str, url: str) -> str | None:
        """None when `org` may be notified at `url`, else a one-line reason (for a 422).
        Names only: whether the host resolves to an allowed address is known at delivery."""
        rules = self._orgs.get(org)
        if rules is None or not (rules.targets.hosts or rules.targets.networks):
            return f"the org {org} allows no webhooks"
        return reason(rules.targets, url)

    async def deliver(
        self,
        org: str,
        url: str,
        event: Mapping[str, Any],
        *,
        webhook_id: str | None = None,
    ) -> Delivery:
        """POSTs `event` to `url`, retrying as the settings say. Never raises for what the
        target does; the Delivery says how it went. `webhook_id` keeps the id of a
        notification sent again later (by default each call is a new notification)."""
        if webhook_id is None:
            webhook_id = f"msg_{uuid.uuid4().hex}"
        elif not _ID.match(webhook_id):
            raise ValueError(f"webhook id {webhook_id!r} must match {_ID.pattern}")
        body = jsoncodec.dumps(dict(event))
        host = host_of(url)
        refusal = self.check_target(org, url)
        if refusal is None and len(body) > self.settings.max_body:
            refusal = f"the notification is {len(body)} bytes, more than max_body"
        if refusal is not None:
            return self._failed(org, host, Delivery(False, 0, None, refusal, webhook_id))
        delivery = await self._send(url, body, webhook_id, self._orgs[org])
        return delivery if delivery.ok else self._failed(org, host, delivery)

    async def aclose(self) -> None:
        session, resolver = self._session, self._resolver
        self._session = self._resolver = None
        if session is not None:
            await session.close()
        if resolver is not None:
            await resolver.close()

    async def __aenter__(self) -> Webhooks:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- internals ---------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._resolver = GuardedResolver()
            connector = aiohttp.TCPConnector(
                resolver=self._resolver, use_dns_cache=False, force_close=True
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
            )
        return self._session

    async def _send(self, url: str, body: bytes, webhook_id: str, rules: _Org) -> Delivery:
        settings = self.settings
        session = self._client()
        timeout = aiohttp.ClientTimeout(total=settings.timeout)
        tries = 0

        async def attempt() -> _Attempt:
            nonlocal tries
            tries += 1
            timestamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                ID_HEADER: webhook_id,
                TIMESTAMP_HEADER: str(timestamp),
                SIGNATURE_HEADER: sign(rules.key, webhook_id, timestamp, body),
            }
            try:
                async with session.post(
                    url, data=body, headers=headers, timeout=timeout, allow_redirects=False
                ) as response:
                    return _answer(response, settings.max_backoff)
            except TimeoutError:
                return _Attempt(None, f"timed out after {settings.timeout:g}s", retry=True)
            except aiohttp.ClientError as exc:
                return _failure(exc)

        backoff = wait_exponential_jitter(
            multiplier=settings.backoff, max=settings.max_backoff, jitter=settings.backoff
        )

        def wait(state: RetryCallState) -> float:
            if state.outcome is not None and not state.outcome.failed:
                after: float | None = state.outcome.result().retry_after
                if after is not None:
                    return after
            return backoff(state)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(settings.attempts),
            wait=wait,
            retry=retry_if_result(lambda outcome: outcome.retry),
            retry_error_callback=_last_result,
            sleep=anyio.sleep,
        )
        token = NETWORKS.set(rules.targets.networks)
        try:
            last: _Attempt = await retrying(attempt)
        finally:
            NETWORKS.reset(token)
        ok = last.error is None
        return Delivery(ok, tries, last.status, last.error, webhook_id)

    def _failed(self, org: str, host: str, delivery: Delivery) -> Delivery:
        logger.warning(
            "webhook for org %s to host %s failed after %d attempt(s): %s",
            org,
            host,
            delivery.attempts,
            delivery.error,
        )
        return delivery


@dataclass(frozen=True, slots=True)
class _Org:
    key: bytes
    targets: Targets


@dataclass(frozen=True, slots=True)
class _Attempt:
    status: int | None
    error: str | None
    retry: bool = False
    retry_after: float | None = None


def _secret(org: str, variable: str, env: Mapping[str, str]) -> tuple[bytes, str | None]:
    value = env.get(variable)
    if not value:
        return b"", f"environment variable {variable} (org {org}'s webhook secret) is not set"
    try:
        key = signing_key(value)
    except ValueError:
        return b"", f"org {org}'s webhook secret in {variable} starts whsec_ but is not base64"
    if len(key) < MIN_SECRET_BYTES:
        return b"", (
            f"org {org}'s webhook secret in {variable} is shorter than {MIN_SECRET_BYTES} bytes"
        )
    return key, None


def _answer(response: aiohttp.ClientResponse, cap: float) -> _Attempt:
    status = response.status
    if 200 <= status < 300:
        return _Attempt(status, None)
    if 300 <= status < 400:
        return _Attempt(status, f"HTTP {status}: redirects are not followed")
    if status == 429:
        after = _retry_after(response.headers.get("Retry-After"), cap)
        return _Attempt(status, "HTTP 429", retry=True, retry_after=after)
    return _Attempt(status, f"HTTP {status}", retry=status >= 500)


def _failure(exc: aiohttp.ClientError) -> _Attempt:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, Refused):
            return _Attempt(None, str(cause))
        cause = cause.__cause__
    if isinstance(exc, aiohttp.InvalidURL):
        return _Attempt(None, "callback_url is not a valid URL")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _Attempt(None, f"TLS certificate refused: {exc.certificate_error}")
    if isinstance(exc, aiohttp.ClientResponseError):
        # Its text holds the URL (path and query: a receiver's secret token, often) and
        # what the receiver sent: only the status and a line of its message are kept.
        message = " ".join(str(exc.message).split())[:200]
        return _Attempt(None, f"HTTP {exc.status}: {message}", retry=True)
    return _Attempt(None, f"{type(exc).__name__}: {_without_url(str(exc))}", retry=True)


def _without_url(text: str) -> str:
    """An aiohttp error's text with any URL in it cut to its scheme and host."""
    return re.sub(r"(https?://[^/\s'\"]+)[^\s'\"]*", r"\1/...", " ".join(text.split()))[:300]


def _retry_after(value: str | None, cap: float) -> float | None:
    """Retry-After's seconds or HTTP date as a wait, capped; None when absent or unreadable."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), cap)


def _last_result(state: RetryCallState) -> Any:
    """Once the attempts are spent, the last attempt's outcome is the delivery's."""
    assert state.outcome is not None
    return state.outcome.result()
