"""Signed webhooks: the session API's notifications to a caller's `callback_url`.

A caller creating a session may name a `callback_url`; the gateway then POSTs a JSON
notification there on every terminal state, question and approval request. The URL is
the caller's choice, so it is an SSRF risk: the gateway would otherwise post into its own
network (metadata endpoints, admin ports, redis) on anyone's behalf. Hence:

- Each org lists the targets it may deliver to (`webhooks.orgs.<org>.allow`): host names
  (`hooks.example.com`, or `*.example.com` for any subdomain; only on the scheme's default
  port unless the entry says `:port`) and IP networks (`10.0.0.0/8`, `::1/128`; a bare
  address is its own network; any port). A network entry allows every address inside it,
  private ones included: never write `0.0.0.0/0`. `check_target` tells the session API,
  at creation, why a URL is refused; `deliver` checks again.
- The check that matters happens at connect time, on the *resolved* addresses: a name
  that resolves (or is rebound) to a loopback, private, link-local, CGNAT, multicast,
  reserved or unspecified address, or to an IPv6 form embedding one (IPv4-mapped, NAT64,
  6to4), is refused unless the address lies in one of the org's networks. An IP literal
  in the URL (which aiohttp does not resolve) must lie in one of those networks.
  Redirects are not followed, proxy variables are ignored, and connections are never
  reused (a kept-alive connection opened under one org's networks must not serve
  another's), nor are cookies kept.
- Plain http is allowed only for an IP literal inside one of the org's networks, or for an
  org with `https_only: false`.

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
import contextvars
import hashlib
import hmac
import ipaddress
import logging
import math
import os
import re
import socket
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
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from pydantic import Field, field_validator, model_validator
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt
from tenacity.wait import wait_exponential_jitter
from yarl import URL

from .. import jsoncodec
from ..auth import NAME
from ..errors import ConfigError, ConfigIssue
from ..strict import Strict

logger = logging.getLogger(__name__)

ID_HEADER: Final = "Webhook-Id"
TIMESTAMP_HEADER: Final = "Webhook-Timestamp"
SIGNATURE_HEADER: Final = "Webhook-Signature"
USER_AGENT: Final = "mcp-tag-gateway"
MIN_SECRET_BYTES: Final = 32
MAX_URL_LENGTH: Final = 2048

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
            _parse_entry(entry)
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
            hosts: list[_HostRule] = []
            networks: list[Network] = []
            for entry in org.allow:
                rule = _parse_entry(entry)
                if isinstance(rule, _HostRule):
                    hosts.append(rule)
                else:
                    networks.append(rule)
            self._orgs[org_id] = _Org(key, tuple(hosts), tuple(networks), org.https_only)
        if issues:
            raise ConfigError(issues)
        self._session: aiohttp.ClientSession | None = None
        self._resolver: _GuardedResolver | None = None

    def check_target(self, org: str, url: str) -> str | None:
        """None when `org` may be notified at `url`, else a one-line reason (for a 422).
        Names only: whether the host resolves to an allowed address is known at delivery."""
        rules = self._orgs.get(org)
        if rules is None or not (rules.hosts or rules.networks):
            return f"the org {org} allows no webhooks"
        return _reason(rules, url)

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
        host = _host_of(url)
        reason = self.check_target(org, url)
        if reason is None and len(body) > self.settings.max_body:
            reason = f"the notification is {len(body)} bytes, more than max_body"
        if reason is not None:
            return self._failed(org, host, Delivery(False, 0, None, reason, webhook_id))
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
            self._resolver = _GuardedResolver()
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
        token = _NETWORKS.set(rules.networks)
        try:
            last: _Attempt = await retrying(attempt)
        finally:
            _NETWORKS.reset(token)
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
class _HostRule:
    name: str
    """Lower case, without the `*.` of a wildcard."""
    wildcard: bool
    port: int | None

    def matches(self, host: str, port: int, default_port: int) -> bool:
        if port != (default_port if self.port is None else self.port):
            return False
        if self.wildcard:
            return host.endswith("." + self.name)
        return host == self.name


@dataclass(frozen=True, slots=True)
class _Org:
    key: bytes
    hosts: tuple[_HostRule, ...]
    networks: tuple[Network, ...]
    https_only: bool


@dataclass(frozen=True, slots=True)
class _Attempt:
    status: int | None
    error: str | None
    retry: bool = False
    retry_after: float | None = None


class _Refused(OSError):
    """Raised by the resolver (aiohttp wraps it in a ClientConnectorDNSError)."""


_NETWORKS: contextvars.ContextVar[tuple[Network, ...]] = contextvars.ContextVar(
    "webhook_networks", default=()
)
"""The networks of the org being delivered for, read by the resolver: aiohttp resolves in
the delivering task (or one it starts), which sees this context."""


class _GuardedResolver(AbstractResolver):
    """Resolves as aiohttp would, then keeps only the addresses the org may reach."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        networks = _NETWORKS.get()
        found = await self._inner.resolve(host, port, family)
        kept = [r for r in found if (a := _ip(r["host"])) is not None and _permitted(a, networks)]
        if not kept:
            raise _Refused(f"refused: {host} resolves to a private address")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def _reason(rules: _Org, url: str) -> str | None:
    """Why `url` is no target for an org with these rules, or None."""
    if len(url) > MAX_URL_LENGTH:
        return f"callback_url is longer than {MAX_URL_LENGTH} characters"
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return "callback_url contains whitespace or control characters"
    try:
        target = URL(url)
    except ValueError as exc:
        return f"callback_url is malformed: {exc}"
    if target.scheme not in ("http", "https") or not target.is_absolute():
        return "callback_url must be an absolute http or https URL"
    if "@" in target.raw_authority:
        return "callback_url must not carry credentials (user:password@)"
    host = (target.raw_host or "").lower()
    port = target.port
    if not host or port is None or port == 0:
        return "callback_url has no valid host and port"
    literal = None if "%" in host else _ip(host)
    if literal is None and not _HOST.match(host.removesuffix(".")):
        return f"callback_url's host {host} is not a valid host name"
    shown = host if target.explicit_port is None else f"{host}:{port}"
    if literal is not None and not _allowed(literal, rules.networks):
        if not _public(literal):
            return (
                f"callback_url names the private address {host}, which is not in the org's "
                "webhook networks"
            )
        return f"host {shown} is not in the org's webhook allow-list"
    if literal is None and not any(
        rule.matches(host.removesuffix("."), port, _DEFAULT_PORTS[target.scheme])
        for rule in rules.hosts
    ):
        return f"host {shown} is not in the org's webhook allow-list"
    if target.scheme == "http" and rules.https_only and literal is None:
        return "callback_url must be https"
    return None


def _host_of(url: str) -> str:
    """The host to name in a log line (never the path: it may hold a token)."""
    try:
        return URL(url).raw_host or "?"
    except ValueError:
        return "?"


def _parse_entry(entry: str) -> _HostRule | Network:
    """One `allow` entry; ValueError says what is wrong with it."""
    text = entry.lower()
    if "/" in text:
        try:
            return ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            raise ValueError(f"allow entry {entry!r} is not an IP network: {exc}") from None
    address = _ip(text)
    if address is not None:
        return ipaddress.ip_network(address)
    name, colon, port_text = text.partition(":")
    port: int | None = None
    if colon:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"allow entry {entry!r} has no valid port")
        port = int(port_text)
    if _ip(name) is not None:
        raise ValueError(f"allow entry {entry!r}: an address takes no port; write a network")
    wildcard = name.startswith("*.")
    name = name.removeprefix("*.")
    if len(name) > 253 or not _HOST.match(name):
        raise ValueError(
            f"allow entry {entry!r} is neither a host name, *.domain nor an IP network"
        )
    return _HostRule(name, wildcard, port)


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


def _ip(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _embedded(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches: mapped (::ffff:a.b.c.d) or NAT64."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _public(address: Address) -> bool:
    inner = _embedded(address)
    if inner is not None:
        return _public(inner)
    if isinstance(address, ipaddress.IPv6Address):
        if address.sixtofour is not None and not _public(address.sixtofour):
            return False
        if address.is_site_local:
            return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _allowed(address: Address, networks: tuple[Network, ...]) -> bool:
    inner = _embedded(address)
    return any(address in net or (inner is not None and inner in net) for net in networks)


def _permitted(address: Address, networks: tuple[Network, ...]) -> bool:
    return _public(address) or _allowed(address, networks)


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
        if isinstance(cause, _Refused):
            return _Attempt(None, str(cause))
        cause = cause.__cause__
    if isinstance(exc, aiohttp.InvalidURL):
        return _Attempt(None, "callback_url is not a valid URL")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _Attempt(None, f"TLS certificate refused: {exc.certificate_error}")
    return _Attempt(None, f"{type(exc).__name__}: {exc}", retry=True)


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
