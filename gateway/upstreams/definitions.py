"""Tool definitions an admin has let through, and what to do when an upstream changes one.

An upstream can change what a tool says it does at any time (a "rug pull": the
description a model reads, the schema it fills in). Each tool's definition is
fingerprinted; the first definition seen is trusted and recorded. When a later listing
brings a different one, the upstream's `on_definition_change` decides:

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
from ..errors import GatewayError
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


def short(fp: str) -> str:
    return fp[:19]


class NothingToApprove(GatewayError):
    pass


@dataclass(frozen=True, slots=True)
class Pending:
    upstream: str
    tool: str
    approved: str
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
            known = data.setdefault(upstream, {})
            for tool in tools:
                fp = fingerprint(tool)
                entry = known.get(tool.name)
                if entry is None:
                    known[tool.name] = {"approved": fp}
                    kept.append(tool)
                    continue
                old = entry["approved"]
                if fp == old:
                    if "pending" in entry:  # changed back to what was approved
                        _clear_pending(entry)
                    kept.append(tool)
                    continue
                if mode is OnDefinitionChange.QUARANTINE:
                    if entry.get("pending") != fp:
                        entry.update(
                            pending=fp,
                            pending_since=time.time(),
                            pending_definition=tool.model_dump(
                                mode="json", by_alias=True, exclude_none=True
                            ),
                        )
                        self.audit.record(
                            "tool_definition_changed",
                            level=logging.WARNING,
                            upstream=upstream,
                            tool=tool.name,
                            old=old,
                            new=fp,
                            action="quarantined",
                        )
                    hidden[tool.name] = (
                        f"its definition changed ({short(old)} → {short(fp)}) and waits for "
                        "approval"
                    )
                    continue
                _clear_pending(entry)
                entry["approved"] = fp
                if mode is OnDefinitionChange.AUDIT:
                    self.audit.record(
                        "tool_definition_changed",
                        level=logging.WARNING,
                        upstream=upstream,
                        tool=tool.name,
                        old=old,
                        new=fp,
                        action="used",
                    )
                else:
                    logger.info(
                        "upstream %s: tool %s changed its definition (%s → %s); accepted",
                        upstream,
                        tool.name,
                        short(old),
                        short(fp),
                    )
                kept.append(tool)
        return kept, hidden

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


def _clear_pending(entry: dict[str, Any]) -> None:
    for key in ("pending", "pending_since", "pending_definition"):
        entry.pop(key, None)
