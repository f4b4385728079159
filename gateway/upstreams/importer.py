"""`gateway upstreams import`: bring the servers of a desktop MCP client's config file.

Desktop clients (Claude Desktop, Cursor, VS Code, ...) list their servers as JSON:

    {"mcpServers": {"time": {"command": "uvx", "args": ["mcp-server-time"]},
                    "crm": {"url": "https://crm.internal/mcp", "headers": {...}}}}

(VS Code calls the map `servers` and says `"type": "stdio" | "http" | "sse"`.) Each server
becomes an entry of gateway.yaml's `upstreams:`. The entries are inserted into the file's
text, so its comments and layout stay; the result is validated before it replaces the file,
in one rename, so a failed import changes nothing.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, ConfigIssue
from ..yamlfile import parse_yaml
from .config import NAME_PATTERN

_HTTP_TYPES = {
    "http": "streamable_http",
    "streamable-http": "streamable_http",
    "streamable_http": "streamable_http",
    "streamablehttp": "streamable_http",
    "sse": "sse",
}
_KNOWN = {"command", "args", "env", "cwd", "url", "headers", "type", "transport", "disabled"}


@dataclass
class Imported:
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Upstream name → its gateway.yaml entry."""
    notes: list[str] = field(default_factory=list)
    """What the person should know: renamed servers, ignored keys, assumptions."""


def read_client_config(path: Path) -> Imported:
    """The upstream entries for every server in a desktop client's JSON config."""
    display = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([ConfigIssue(display, f"cannot read file: {exc}")]) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError([ConfigIssue(display, f"not JSON: {exc}")]) from exc
    servers = data.get("mcpServers", data.get("servers")) if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise ConfigError(
            [ConfigIssue(display, "expected an object with 'mcpServers' (or 'servers')")]
        )
    imported = Imported()
    issues: list[ConfigIssue] = []
    for original, server in servers.items():
        name = _name(str(original))
        if name != original:
            imported.notes.append(f"server {original!r} is upstream {name!r}")
        if name in imported.entries:
            issues.append(ConfigIssue(display, f"two servers become upstream {name!r}"))
            continue
        try:
            imported.entries[name] = _entry(server, imported.notes, str(original))
        except ValueError as exc:
            issues.append(ConfigIssue(display, f"server {original!r}: {exc}"))
    if issues:
        raise ConfigError(issues)
    if any("env" in e or "headers" in e for e in imported.entries.values()):
        imported.notes.append(
            "env and headers were copied as they are: move secrets into the gateway's "
            "environment and write ${NAME} in their place"
        )
    return imported


def _name(original: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", original).strip("-_")[:64] or "server"
    return name if re.match(NAME_PATTERN, name) else f"s-{name}"[:64]


def _entry(server: object, notes: list[str], original: str) -> dict[str, Any]:
    if not isinstance(server, dict):
        raise ValueError("expected an object")
    for key in sorted(set(server) - _KNOWN):
        notes.append(f"server {original!r}: key {key!r} has no equivalent; left out")
    entry: dict[str, Any] = {}
    if "command" in server:
        entry["transport"] = "stdio"
        entry["command"] = _text(server["command"], "command")
        if "args" in server:
            entry["args"] = _texts(server["args"], "args")
        if "env" in server:
            entry["env"] = _text_map(server["env"], "env")
        if "cwd" in server:
            entry["cwd"] = _text(server["cwd"], "cwd")
    elif "url" in server:
        kind = str(server.get("type", server.get("transport", ""))).lower()
        if kind and kind not in _HTTP_TYPES:
            raise ValueError(f"unknown type {kind!r} for a server with a url")
        if not kind:
            notes.append(
                f"server {original!r}: no type given; taken as streamable_http "
                "(write transport: sse if it is an SSE server)"
            )
        entry["transport"] = _HTTP_TYPES.get(kind, "streamable_http")
        entry["url"] = _text(server["url"], "url")
        if "headers" in server:
            entry["headers"] = _text_map(server["headers"], "headers")
    else:
        raise ValueError("has neither 'command' (a local server) nor 'url' (a remote one)")
    if server.get("disabled") is True:
        entry["enabled"] = False
    return entry


def _text(value: object, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be non-empty text")
    return value


def _texts(value: object, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a list of text")
    return list(value)


def _text_map(value: object, key: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(f"{key} must map names to text")
    return {str(k): v for k, v in value.items()}


def render(entries: Mapping[str, Mapping[str, Any]], indent: int = 2, step: int = 2) -> str:
    """The entries as YAML lines for the `upstreams:` mapping, indented by `indent`, each
    level below by `step`."""
    text = yaml.safe_dump(
        dict(entries),
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
        indent=step,
    )
    return "".join(" " * indent + line if line.strip() else line for line in text.splitlines(True))


def merged_text(config: Path, entries: Mapping[str, Mapping[str, Any]]) -> str:
    """gateway.yaml's text with `entries` added to its `upstreams:`. Raises ConfigError when
    a name is taken or the section is written in a way that cannot be extended in place."""
    display = str(config)
    text = config.read_text(encoding="utf-8")
    doc = parse_yaml(text, config, display)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    root = doc.node
    section = None
    if isinstance(root, yaml.MappingNode):
        section = next(((k, v) for k, v in root.value if k.value == "upstreams"), None)
    elif root is not None and not (isinstance(root, yaml.ScalarNode) and root.value == ""):
        raise ConfigError([ConfigIssue(display, "expected a mapping of settings", line=1)])
    if section is None:
        return "".join(lines) + "\nupstreams:\n" + render(entries)
    key, value = section
    if isinstance(value, yaml.ScalarNode) and value.tag.endswith(":null"):
        at = key.start_mark.line + 1
        return "".join(lines[:at]) + render(entries) + "".join(lines[at:])
    if not isinstance(value, yaml.MappingNode) or value.flow_style:
        raise ConfigError(
            [
                ConfigIssue(
                    display,
                    "upstreams is not a block mapping; write it as one, or use --print and "
                    "add the entries by hand",
                    key.start_mark.line + 1,
                    field="upstreams",
                )
            ]
        )
    taken = sorted(set(entries) & {k.value for k, _ in value.value})
    if taken:
        raise ConfigError(
            [
                ConfigIssue(
                    display,
                    f"upstream {name!r} exists already; rename it in one of the files",
                    doc.line_of(("upstreams", name)),
                    field=f"upstreams.{name}",
                )
                for name in taken
            ]
        )
    indent = value.value[0][0].start_mark.column if value.value else 2
    step = 2
    first = value.value[0][1] if value.value else None
    if isinstance(first, yaml.MappingNode) and first.value and not first.flow_style:
        step = min(max(first.value[0][0].start_mark.column - indent, 2), 9)
    end = value.end_mark
    at = end.line if end.column == 0 else end.line + 1
    # Blank lines and top-level comments at the section's end belong to what follows it.
    while at - 1 > key.start_mark.line and (
        not lines[at - 1].strip() or lines[at - 1].startswith("#")
    ):
        at -= 1
    return "".join(lines[:at]) + render(entries, indent, step) + "".join(lines[at:])


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` by `text` in one rename, keeping its permissions."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
