"""Webhook targets: where an org's notifications may go, judged on the URL and again on
the addresses it resolves to.

A `callback_url` is the caller's choice, so it is an SSRF risk: the gateway would
otherwise post into its own network (metadata endpoints, admin ports, redis) on anyone's
behalf. Hence:

- Each org lists the targets it may deliver to (`webhooks.orgs.<org>.allow`): host names
  (`hooks.example.com`, or `*.example.com` for any subdomain; only on the scheme's default
  port unless the entry says `:port`) and IP networks (`10.0.0.0/8`, `::1/128`; a bare
  address is its own network; any port). A network entry allows every address inside it,
  private ones included: never write `0.0.0.0/0`. `reason` tells the session API, at
  creation (through `Webhooks.check_target`), why a URL is refused; `Webhooks.deliver`
  checks again.
- The check that matters happens at connect time, on the *resolved* addresses: a name
  that resolves (or is rebound) to a loopback, private, link-local, CGNAT, multicast,
  reserved or unspecified address, or to an IPv6 form embedding one (IPv4-mapped, NAT64,
  6to4), is refused unless the address lies in one of the org's networks
  (`GuardedResolver`, under the networks `Webhooks` sets in `NETWORKS`). An IP literal in
  the URL (which aiohttp does not resolve) must lie in one of those networks.
  `Webhooks`' client does its part: redirects are not followed, proxy variables are
  ignored, and connections are never reused (a kept-alive connection opened under one
  org's networks must not serve another's), nor are cookies kept.
- Plain http is allowed only for an IP literal inside one of the org's networks, or for an
  org with `https_only: false`.
"""

from __future__ import annotations

import contextvars
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

MAX_URL_LENGTH: Final = 2048

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
class Targets:
    """Where one org's notifications may go."""

    hosts: tuple[_HostRule, ...]
    networks: tuple[Network, ...]
    https_only: bool

    @classmethod
    def parse(cls, allow: Iterable[str], https_only: bool) -> Targets:
        """From the org's `allow` entries; ValueError (see `parse_entry`) for a bad one."""
        hosts: list[_HostRule] = []
        networks: list[Network] = []
        for entry in allow:
            rule = parse_entry(entry)
            if isinstance(rule, _HostRule):
                hosts.append(rule)
            else:
                networks.append(rule)
        return cls(tuple(hosts), tuple(networks), https_only)


class Refused(OSError):
    """Raised by the resolver (aiohttp wraps it in a ClientConnectorDNSError)."""


NETWORKS: contextvars.ContextVar[tuple[Network, ...]] = contextvars.ContextVar(
    "webhook_networks", default=()
)
"""The networks of the org being delivered for, read by the resolver: aiohttp resolves in
the delivering task (or one it starts), which sees this context."""


class GuardedResolver(AbstractResolver):
    """Resolves as aiohttp would, then keeps only the addresses the org may reach."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        networks = NETWORKS.get()
        found = await self._inner.resolve(host, port, family)
        kept = [r for r in found if (a := _ip(r["host"])) is not None and _permitted(a, networks)]
        if not kept:
            raise Refused(f"refused: {host} resolves to a private address")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def reason(rules: Targets, url: str) -> str | None:
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


def host_of(url: str) -> str:
    """The host to name in a log line (never the path: it may hold a token)."""
    try:
        return URL(url).raw_host or "?"
    except ValueError:
        return "?"


def parse_entry(entry: str) -> _HostRule | Network:
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
