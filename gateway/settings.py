"""gateway.yaml → typed settings. Paths in the file are relative to the file's folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from .api.settings import ApiSettings
from .auth import AuthSettings
from .engine.settings import EngineSettings
from .errors import ConfigError, ConfigIssue
from .state.base import TTLs
from .strict import Strict
from .upstreams.config import (
    NAME_PATTERN,
    StdioUpstream,
    Upstream,
    public_prefix,
    reserved_claim,
)
from .yamlfile import YamlDocument, read_yaml, validate

DEFAULT_CONFIG = Path("configs/gateway.yaml")
CONFIG_ENV = "GATEWAY_CONFIG"
STATE_URL_ENV = "GATEWAY_STATE_URL"
STATE_SCHEMES = ("memory", "redis", "rediss", "redis+cluster", "rediss+cluster")


LOOPBACK_HOSTS = ("127.0.0.1", "127.0.0.1:*", "localhost", "localhost:*", "[::1]", "[::1]:*")
LOOPBACK_ORIGINS = ("http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*")


class ServerSettings(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    allowed_hosts: Annotated[tuple[str, ...], Field(strict=False)] = LOOPBACK_HOSTS
    """Host headers /mcp answers (`name` or `name:port`, `name:*` for any port); anything
    else gets 421, which defeats DNS rebinding. Add the names a proxy forwards."""
    allowed_origins: Annotated[tuple[str, ...], Field(strict=False)] = LOOPBACK_ORIGINS
    """Browser Origins /mcp accepts (403 otherwise); a request without Origin passes."""
    max_sessions: Annotated[int, Field(ge=1)] = 10_000
    """Handshake-era MCP sessions open at once (503 beyond)."""
    session_idle_timeout: Annotated[float, Field(gt=0, strict=False)] = 1800
    """Seconds after which an idle handshake-era MCP session is closed."""
    direct_calls: bool = True
    """Serve tools/call and tools/list of 2026-07-28 callers and of handshake-era HTTP
    sessions, and call 2026-07-28 streamable-HTTP upstreams, without the SDK's generic
    per-message machinery (front/modern_calls.py, front/session_calls.py, upstreams/exchange.py),
    which costs most of a proxied call's CPU. Off: the SDK handles every message."""


class TagSettings(Strict):
    dir: str = "orgs"
    """The tags directory: one `<org>.yaml` per org, shared tags in `_*.yaml`."""
    watch: bool = True
    """Reload when a file in the directory changes."""
    cache_size: Annotated[int, Field(ge=0)] = 50_000
    """Resolved contexts kept in-process (an LRU, dropped on every config change)."""


Seconds = Annotated[float, Field(gt=0, strict=False)]


class StateTTLSettings(Strict):
    """Seconds each kind of key lives after its last write or its session's activity."""

    session: Seconds = 2 * 3600
    events: Seconds = 3600
    tool_execution: Seconds = 5 * 60
    tool_results: Seconds = 10 * 60
    flow: Seconds = 2 * 3600
    tag_cache: Seconds | None = None
    """No longer used: earlier versions kept a resolved-tags cache in the state store,
    which nothing read. Accepted, with a warning, so that their files still load."""


class StateSettings(Strict):
    """Where session state, flow state and event streams live."""

    url: str = "memory://"
    """`memory://` (in-process, the default), `redis://host:port/db`, `rediss://...`, or
    `redis+cluster://host:port` (any node of a Redis Cluster). The environment's
    GATEWAY_STATE_URL wins over this."""
    ttl: StateTTLSettings = StateTTLSettings()
    stream_max_len: Annotated[int, Field(ge=1)] = 10_000
    """Events kept per stream; a reader that falls further behind is told of the gap."""

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        scheme = urlsplit(url).scheme
        if scheme not in STATE_SCHEMES:
            raise ValueError(
                f"unknown state URL scheme {scheme!r}: expected one of "
                + ", ".join(f"{s}://" for s in STATE_SCHEMES)
            )
        return url


UpstreamName = Annotated[str, Field(pattern=NAME_PATTERN)]


class Settings(Strict):
    data_dir: str = ".gateway"
    """Files the gateway writes: the audit log and the approved tool definitions."""
    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    """Who may call /mcp (see gateway.auth): API keys and JWT."""
    tags: TagSettings = TagSettings()
    state: StateSettings = StateSettings()
    upstreams: dict[UpstreamName, Upstream] = Field(default_factory=dict)
    """The MCP servers the gateway is a client of, by name (see gateway.upstreams.config)."""
    engine: EngineSettings = EngineSettings()
    """Agent sessions (gateway/engine): the planner, budgets, integrity."""
    api: ApiSettings = ApiSettings()
    """The session API (gateway/api): its streams and webhooks."""


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Settings with the file they came from, against which relative paths resolve."""

    path: Path
    settings: Settings
    notes: tuple[str, ...] = ()
    """What an operator should know but that does not stop the file (`file:line: ...`),
    for whoever opens it to serve or check to say once."""

    @property
    def tags_dir(self) -> Path:
        return (self.path.parent / self.settings.tags.dir).resolve()

    @property
    def data_dir(self) -> Path:
        return (self.path.parent / self.settings.data_dir).resolve()

    @property
    def audit_path(self) -> Path:
        return self.data_dir / "audit.jsonl"

    @property
    def definitions_path(self) -> Path:
        return self.data_dir / "tool-definitions.json"

    @property
    def state_url(self) -> str:
        return os.environ.get(STATE_URL_ENV) or self.settings.state.url

    @property
    def state_ttls(self) -> TTLs:
        return TTLs(**self.settings.state.ttl.model_dump(exclude={"tag_cache"}))


def config_path(explicit: str | Path | None) -> Path:
    if explicit is not None:
        return Path(explicit)
    return Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG))


def load_config(path: Path) -> GatewayConfig:
    """Read gateway.yaml. Raises ConfigError naming the file, field and line."""
    doc = read_yaml(path)
    if doc.data is None:
        doc.data = {}
    if not isinstance(doc.data, dict):
        raise ConfigError([ConfigIssue(str(path), "expected a mapping of settings", line=1)])
    settings, issues = validate(doc, Settings, str(path))
    if settings is None:
        raise ConfigError(issues)
    issues = _reserved(settings, doc, str(path)) + _shared_prefixes(settings, doc, str(path))
    if issues:
        raise ConfigError(issues)
    notes: list[str] = []
    if settings.state.ttl.tag_cache is not None:
        line = doc.line_of(("state", "ttl", "tag_cache"))
        where = f"{path}:{line}" if line is not None else str(path)
        notes.append(
            f"{where}: state.ttl.tag_cache: no longer used (the state store keeps no "
            "resolved-tags cache); the line can go"
        )
    path = path.resolve()
    return GatewayConfig(path, _anchor_paths(settings, path.parent), tuple(notes))


def _anchor_paths(settings: Settings, folder: Path) -> Settings:
    """Relative stdio commands (`../.venv/bin/python`, not a bare `npx` found on PATH)
    and working directories are relative to gateway.yaml's folder, like every path in it."""
    anchored = {}
    for name, upstream in settings.upstreams.items():
        if isinstance(upstream, StdioUpstream):
            changes: dict[str, str] = {}
            if "/" in upstream.command and not Path(upstream.command).is_absolute():
                changes["command"] = str(folder / upstream.command)
            if upstream.cwd is not None and not Path(upstream.cwd).is_absolute():
                changes["cwd"] = str(folder / upstream.cwd)
            if changes:
                upstream = upstream.model_copy(update=changes)
        anchored[name] = upstream
    return settings.model_copy(update={"upstreams": anchored})


def _reserved(settings: Settings, doc: YamlDocument, display: str) -> list[ConfigIssue]:
    """The gateway's own tools are an upstream of the pool too: a configured one taking
    their name or prefix would be mistaken for them in the audit log, or shadow them."""
    issues: list[ConfigIssue] = []
    for name, upstream in settings.upstreams.items():
        claim = reserved_claim(name, upstream)
        if claim is not None:
            field, message = claim
            line = doc.line_of(tuple(field.split(".")))
            issues.append(ConfigIssue(display, message, line, field=field))
    return issues


def _shared_prefixes(settings: Settings, doc: YamlDocument, display: str) -> list[ConfigIssue]:
    """Two upstreams with one non-empty prefix would shadow each other's tools."""
    issues: list[ConfigIssue] = []
    first: dict[str, str] = {}
    for name, upstream in settings.upstreams.items():
        prefix = public_prefix(name, upstream)
        if not prefix:
            continue  # passing names through: collisions are told tool by tool, at discovery
        if prefix in first:
            issues.append(
                ConfigIssue(
                    display,
                    f"prefix {prefix!r} is also upstream {first[prefix]!r}'s; "
                    "give each upstream its own",
                    doc.line_of(("upstreams", name, "prefix")),
                    field=f"upstreams.{name}.prefix",
                )
            )
        first.setdefault(prefix, name)
    return issues
