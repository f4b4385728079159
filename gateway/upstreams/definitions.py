"""Tool definitions an admin has let through, and what to do when an upstream changes one.

An upstream can change what a tool says it does at any time (a "rug pull": the
description a model reads, the schema it fills in). Each tool's definition is
fingerprinted; the definitions of an upstream's first listing are trusted and recorded.
When a later listing brings a different one, or a tool the upstream did not have (a new
one, or one renamed: a rug pull need not keep the name), the upstream's
`on_definition_change` decides:

- accept: use it (logged);
- audit: use it, with an audit event naming the old and new fingerprints (the default);
- quarantine: hide the tool, with an audit event, until an admin approves the new
  definition (`gateway tools approve <tool>`).

The ledger lives in `tool-definitions.json` in the data directory, so it outlives restarts
and the CLI can approve while the gateway runs (the gateway watches the file). Every
read-modify-write holds an exclusive lock on a file beside it: the gateway and the CLI
never lose each other's updates. Without a path the ledger is kept in memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mcp_types as types

from ..audit import AuditLog
from ..errors import GatewayError, NothingToApprove
from .config import OnDefinitionChange

logger = logging.getLogger("gateway.upstreams")

FORMAT = 1
FINGERPRINTED = frozenset(
    {"name", "title", "description", "input_schema", "output_schema", "annotations"}
)


def fingerprint(tool: types.Tool) -> str:
    """sha256 of the canonical JSON of the tool's name, title, description, schemas and
    annotations (not of `_meta` or icons, which change nothing a model acts on)."""
    data = tool.model_dump(
        mode="json", by_alias=True, exclude_none=True, include=set(FINGERPRINTED)
    )
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def short(fp: str | None) -> str:
    """A fingerprint as people read it; "new" for a tool that had none approved."""
    return fp[:19] if fp is not None else "new"


@dataclass(frozen=True, slots=True)
class Pending:
    upstream: str
    tool: str
    approved: str | None
    """None for a tool new to an upstream already trusted."""
    pending: str
    since: float
    definition: dict[str, Any]
    """The new definition, for the admin to read before approving."""


class DefinitionLedger:
    def __init__(self, path: Path | None = None, audit: AuditLog | None = None) -> None:
        self.path = path
        self.audit = audit or AuditLog()
        self._data: dict[str, dict[str, dict[str, Any]]] = {}
        self._seen: bytes | None = None
        """The file's bytes as last read or written: a change by anyone else differs."""

    def judge(
        self, upstream: str, tools: Sequence[types.Tool], mode: OnDefinitionChange
    ) -> tuple[list[types.Tool], dict[str, str]]:
        """The tools to use, and the hidden ones with the reason. Records first sightings
        and changes (with their audit events) once: judging the same listing again
        changes nothing."""
        kept: list[types.Tool] = []
        hidden: dict[str, str] = {}
        with self._transaction() as data:
            # Only the first sight of an upstream is trusted whole: a tool it adds later
            # (a new one, or one renamed) is a change like any other.
            seen_before = upstream in data
            known = data.setdefault(upstream, {})
            for tool in tools:
                fp = fingerprint(tool)
                entry = known.get(tool.name)
                if entry is None and not seen_before:
                    known[tool.name] = {"approved": fp, "definition": _definition(tool)}
                    kept.append(tool)
                    continue
                if entry is None:
                    entry = known[tool.name] = {"approved": None}
                old = entry["approved"]
                if fp == old:
                    if "pending" in entry:  # changed back to what was approved
                        _clear_pending(entry)
                    entry.setdefault("definition", _definition(tool))
                    kept.append(tool)
                    continue
                if mode is OnDefinitionChange.QUARANTINE:
                    if entry.get("pending") != fp:
                        entry.update(
                            pending=fp,
                            pending_since=time.time(),
                            pending_definition=_definition(tool),
                        )
                        self.audit.record(
                            "tool_definition_changed",
                            level=logging.WARNING,
                            upstream=upstream,
                            tool=tool.name,
                            old=old,
                            new=fp,
                            change="changed" if old is not None else "added",
                            action="quarantined",
                        )
                    hidden[tool.name] = (
                        f"its definition changed ({short(old)} → {short(fp)}) and waits for "
                        "approval"
                        if old is not None
                        else "it is new to an upstream already trusted and waits for approval"
                    )
                    continue
                _clear_pending(entry)
                entry["approved"] = fp
                entry["definition"] = _definition(tool)
                if mode is OnDefinitionChange.AUDIT:
                    self.audit.record(
                        "tool_definition_changed",
                        level=logging.WARNING,
                        upstream=upstream,
                        tool=tool.name,
                        old=old,
                        new=fp,
                        change="changed" if old is not None else "added",
                        action="used",
                    )
                else:
                    logger.info(
                        "upstream %s: tool %s has a new definition (%s → %s); accepted",
                        upstream,
                        tool.name,
                        short(old),
                        short(fp),
                    )
                kept.append(tool)
        return kept, hidden

    def approved_definition(self, upstream: str, tool: str) -> dict[str, Any] | None:
        """The definition of `tool` as last trusted or approved, if the ledger has it
        (ledgers written before definitions were kept have only fingerprints)."""
        with self._transaction(write=False) as data:
            entry = data.get(upstream, {}).get(tool)
            definition = entry.get("definition") if entry is not None else None
            return definition if isinstance(definition, dict) else None

    def pending(self) -> list[Pending]:
        with self._transaction(write=False) as data:
            return [
                Pending(
                    upstream,
                    tool,
                    entry["approved"],
                    entry["pending"],
                    entry["pending_since"],
                    entry["pending_definition"],
                )
                for upstream, tools in sorted(data.items())
                for tool, entry in sorted(tools.items())
                if "pending" in entry
            ]

    def approve(self, upstream: str, tool: str, by: str | None = None) -> Pending:
        """Let the pending definition of `tool` through. Raises NothingToApprove."""
        with self._transaction() as data:
            entry = data.get(upstream, {}).get(tool)
            if entry is None or "pending" not in entry:
                raise NothingToApprove(
                    f"tool {tool!r} of upstream {upstream!r} has no definition waiting for approval"
                )
            approved = Pending(
                upstream,
                tool,
                entry["approved"],
                entry["pending"],
                entry["pending_since"],
                entry["pending_definition"],
            )
            entry["approved"] = entry["pending"]
            entry["definition"] = entry["pending_definition"]
            _clear_pending(entry)
            self.audit.record(
                "tool_definition_approved",
                level=logging.WARNING,
                upstream=upstream,
                tool=tool,
                old=approved.approved,
                new=approved.pending,
                by=by,
            )
            return approved

    def changed_on_disk(self) -> bool:
        """Whether someone else wrote the file since this ledger last read or wrote it."""
        if self.path is None:
            return False
        try:
            current = self.path.read_bytes()
        except FileNotFoundError:
            current = None
        return current != self._seen

    @contextlib.contextmanager
    def _transaction(self, write: bool = True) -> Iterator[dict[str, dict[str, dict[str, Any]]]]:
        if self.path is None:
            yield self._data
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        with open(lock, "a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            data = self._load()
            before = json.dumps(data, sort_keys=True)
            yield data
            if write and json.dumps(data, sort_keys=True) != before:
                self._store(data)

    def _load(self) -> dict[str, dict[str, dict[str, Any]]]:
        assert self.path is not None
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self._seen = None
            return {}
        try:
            document = json.loads(raw)
            if not isinstance(document, dict) or document.get("format") != FORMAT:
                raise ValueError(f"expected an object with format {FORMAT}")
            tools = document["tools"]
            if not isinstance(tools, dict):
                raise ValueError("expected 'tools' to be an object")
        except (ValueError, KeyError) as exc:
            # Never overwrite what cannot be read: an admin's approvals may be in it.
            raise GatewayError(f"{self.path}: not a tool-definitions file: {exc}") from None
        self._seen = raw
        return tools

    def _store(self, data: dict[str, dict[str, dict[str, Any]]]) -> None:
        assert self.path is not None
        raw = (
            json.dumps({"format": FORMAT, "tools": data}, indent=2, sort_keys=True) + "\n"
        ).encode()
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(raw)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        self._seen = raw


def _definition(tool: types.Tool) -> dict[str, Any]:
    return tool.model_dump(mode="json", by_alias=True, exclude_none=True)


def _clear_pending(entry: dict[str, Any]) -> None:
    for key in ("pending", "pending_since", "pending_definition"):
        entry.pop(key, None)
