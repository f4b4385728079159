"""The `upstreams:` section of gateway.yaml: which MCP servers the gateway is a client of.

    upstreams:
      files:
        transport: stdio
        command: npx
        args: ["-y", "@modelcontextprotocol/server-filesystem", "/srv/docs"]
      crm:
        transport: streamable_http
        url: https://crm.internal/mcp
        headers: {Authorization: "Bearer ${CRM_TOKEN}"}

Header and environment values may reference environment variables as `${NAME}`; they are
expanded when the upstream is connected, and never logged.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from mcp.server import Server
from pydantic import ConfigDict, Field, field_validator

from ..strict import Strict

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
"""An upstream's name: it becomes part of public tool names (`<name>__<tool>`)."""
PREFIX_PATTERN = r"^[A-Za-z0-9._-]{0,64}$"
"""Characters of MCP tool names (SEP-986: `[A-Za-z0-9._-]`, 1 to 128 of them)."""
OWN_UPSTREAM = "gateway"
"""The name under which the pool holds the gateway's own tools (own_tools.py)."""
CALLER_META = "io.mcp-gateway/caller"
"""The `_meta` key of a request to the gateway's own tools that says who calls: set by the
gateway alone, on requests to its in-process upstream alone."""
LINK_META = "io.mcp-gateway/link"
"""The `_meta` key of a request to the gateway's own tools that names the call's link to
its caller (relay.own_links): set by the gateway alone, on requests to its in-process
upstream alone, as CALLER_META is."""
IDEMPOTENCY_META = "io.mcp-gateway/idempotency-key"
"""The `_meta` key of a call's idempotency key (an engine session's calls carry one): the
same key on a call sent again after a restart, so an upstream that keeps keys can tell a
repeat from a new call."""
RESERVED_PREFIX = f"{OWN_UPSTREAM}__"
"""The public prefix of the gateway's own tools: no configured upstream may take it, and
no other upstream's tool is listed under a name that starts with it."""
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\$")


class OnDefinitionChange(StrEnum):
    ACCEPT = "accept"
    """Use the new definition."""
    AUDIT = "audit"
    """Use it, and record an audit event with the old and new fingerprints."""
    QUARANTINE = "quarantine"
    """Hide the tool until an admin approves the new definition."""


Seconds = Annotated[float, Field(gt=0, strict=False)]


class _Upstream(Strict):
    prefix: Annotated[str | None, Field(pattern=PREFIX_PATTERN)] = None
    """Put before every tool name: default `<name>__`; empty to pass names through."""
    enabled: bool = True
    call_timeout: Seconds = 60.0
    """A hard cap on one tool call, progress notifications or not."""
    init_timeout: Seconds = 10.0
    """For connecting and `initialize`."""
    on_definition_change: Annotated[OnDefinitionChange, Field(strict=False)] = (
        OnDefinitionChange.AUDIT
    )
    caller_sessions: Annotated[int, Field(ge=0, le=256)] = 8
    """Sessions (for stdio, processes) opened besides the gateway's own when calls of
    several callers overlap on an upstream whose messages cannot be told apart (the
    handshake era over stdio or SSE), so that its logs, sampling and elicitation reach
    the caller they belong to. 0: calls share one session, and such messages are refused
    while calls of several callers are in flight."""
    roots: tuple[str, ...] = Field(default=(), strict=False)
    """The roots the gateway declares to this upstream (absolute paths or file:// URIs,
    kept as file:// URIs) and answers `roots/list` with; none: roots are not declared.
    Never a caller's: an upstream may widen its file access to the client's roots."""
    caller_sessions_per_user: Annotated[int, Field(ge=1, le=257)] = 4
    """Of those sessions (the gateway's own counted), how many the calls of one user may
    hold at once: beyond it, that user's next call waits for one of its own to end, so
    that one client's parallel calls cannot take every session and starve other users."""

    @field_validator("roots")
    @classmethod
    def _file_roots(cls, roots: tuple[str, ...]) -> tuple[str, ...]:
        uris = tuple(root_uri(root) for root in roots)
        seen: set[str] = set()
        for uri in uris:
            if uri in seen:
                raise ValueError(f"root {uri} is listed twice")
            seen.add(uri)
        return uris


class StdioUpstream(_Upstream):
    transport: Literal["stdio"]
    command: Annotated[str, Field(min_length=1)]
    args: tuple[str, ...] = Field(default=(), strict=False)
    env: dict[str, str] = Field(default_factory=dict)
    """Added to a minimal inherited environment (PATH, HOME, ...); values may hold `${VAR}`."""
    cwd: str | None = None


class HttpUpstream(_Upstream):
    transport: Literal["streamable_http", "sse"]
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    """Values may hold `${VAR}`: expanded at connect time, never logged."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL")
        return url


Upstream = Annotated[StdioUpstream | HttpUpstream, Field(discriminator="transport")]
"""What gateway.yaml may configure."""


class InProcessUpstream(_Upstream):
    """The gateway's own tools, served by an MCP server object in this process (see
    own_tools.py). Never read from gateway.yaml (`Upstream` does not admit it): its
    settings are these defaults, under the reserved name and prefix."""

    model_config = ConfigDict(
        strict=True, extra="forbid", frozen=True, arbitrary_types_allowed=True
    )
    transport: Literal["inprocess"] = "inprocess"
    server: Server[Any]


UpstreamConfig = StdioUpstream | HttpUpstream | InProcessUpstream


def root_uri(root: str) -> str:
    """`root` (an absolute path, or a file:// URI of one on this host) as a file:// URI,
    `..` and `.` resolved. Raises ValueError saying what is wrong."""
    if root.startswith("file:"):
        parts = urlsplit(root)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise ValueError(f"root {root!r}: expected file:///absolute/path (no host, query)")
        path = unquote(parts.path)
    elif "://" in root:
        raise ValueError(f"root {root!r}: expected an absolute path or a file:// URI")
    else:
        path = root
    if not path.startswith("/") or "\0" in path:
        raise ValueError(f"root {root!r}: expected an absolute path or a file:// URI")
    # normpath keeps a leading "//" (POSIX leaves its meaning open): one slash.
    return PurePosixPath(posixpath.normpath("/" + path.lstrip("/"))).as_uri()


def public_prefix(name: str, upstream: UpstreamConfig) -> str:
    return f"{name}__" if upstream.prefix is None else upstream.prefix


def reserved_claim(name: str, upstream: UpstreamConfig) -> tuple[str, str] | None:
    """(the field, what is wrong) when a configured upstream claims what belongs to the
    gateway's own tools: their upstream name (by which the pool, the audit log and the
    definition ledger tell upstreams apart), or a prefix within the reserved one."""
    if name == OWN_UPSTREAM:
        return (
            f"upstreams.{name}",
            f"upstream name {name!r} is reserved for the gateway's own tools "
            f"(prefix {RESERVED_PREFIX!r}); give this upstream another name",
        )
    prefix = public_prefix(name, upstream)
    if not prefix.startswith(RESERVED_PREFIX):
        return None
    reserved = f"starts with {RESERVED_PREFIX!r}, which is reserved for the gateway's own tools"
    if upstream.prefix is None:
        return (
            f"upstreams.{name}",
            f"upstream {name!r}: its default prefix {prefix!r} {reserved}; "
            "give it another name or a prefix",
        )
    return (
        f"upstreams.{name}.prefix",
        f"upstream {name!r}: prefix {prefix!r} {reserved}; choose another prefix",
    )


class MissingVariable(KeyError):
    """A `${NAME}` reference whose variable is not set."""

    def __init__(self, upstream: str, where: str, variable: str) -> None:
        super().__init__(variable)
        self.upstream = upstream
        self.where = where
        self.variable = variable

    def __str__(self) -> str:
        return (
            f"upstream {self.upstream!r}: {self.where} refers to ${{{self.variable}}}, "
            "which is not set in the gateway's environment"
        )


def expand(value: str, upstream: str, where: str, environ: Mapping[str, str] | None = None) -> str:
    """`value` with every `${NAME}` replaced from `environ` (the process environment by
    default); `$$` is a literal `$`. Raises MissingVariable, which names the variable but
    never the value."""
    source = os.environ if environ is None else environ

    def replace(match: re.Match[str]) -> str:
        variable = match.group(1)
        if variable is None:
            return "$"
        if variable not in source:
            raise MissingVariable(upstream, where, variable)
        return source[variable]

    return _REFERENCE.sub(replace, value)


def references(value: str) -> list[str]:
    """The variables `value` refers to."""
    return [m.group(1) for m in _REFERENCE.finditer(value) if m.group(1) is not None]
