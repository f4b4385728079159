"""The audit log: what happened that an admin must be able to look up later.

One JSON object per line (`audit.jsonl` in the gateway's data directory), and the same
event on the `gateway.audit` logger. Without a file (tests, one-off commands) events go to
the logger only.

Routine events (tool calls, logged at debug) are written in batches, at most `BATCH_DELAY`
after they happen: a write(2) per call cost the hot path more than its permission check.
A batch is also written on `close()` (the gateway's shutdown) and before `read()`; a
process killed outright loses at most the last batch. Every other event is written at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import jsoncodec

if TYPE_CHECKING:
    from .calls.outcome import CallRecord

logger = logging.getLogger("gateway.audit")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    event: str
    at: float
    fields: dict[str, Any]

    def to_json(self) -> str:
        event = {"at": self.at, "event": self.event, **self.fields}
        return jsoncodec.dumps(event, sort_keys=True).decode()


class AuditLog:
    REOPEN_CHECK = 1.0
    """Seconds between checks that the file is still the one open (log rotation)."""
    BATCH_DELAY = 0.05
    """Seconds a routine event may wait for the write of its batch."""
    MAX_WAITING = 100_000
    """Events kept while the file cannot be written; the older half goes beyond that."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._fd: int | None = None
        self._inode: int | None = None
        self._checked = 0.0
        self._batch: list[bytes] = []
        self._scheduled = False
        self._closed = False
        """After close() (shutdown), events are written at once: no batch is left behind."""

    def record(self, event: str, *, level: int = logging.DEBUG, **fields: Any) -> AuditEvent:
        """Append one event. `level` is for the logger copy: definition changes are
        warnings; routine tool calls are debug (the file is their record, and a line on
        standard error per call costs more than the call's own check)."""
        entry = AuditEvent(event, time.time(), fields)
        line = entry.to_json()
        if logger.isEnabledFor(level):
            logger.log(level, "%s", line)
        if self.path is None:
            return entry
        if len(self._batch) >= self.MAX_WAITING:  # the file has been failing for a while
            del self._batch[: len(self._batch) // 2]
            logger.error("audit log %s: dropped events the file would not take", self.path)
        self._batch.append((line + "\n").encode())
        if level > logging.DEBUG or self._closed:
            self.flush()
        elif not self._scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop to come back: now
                self.flush()
            else:
                loop.call_later(self.BATCH_DELAY, self.flush)
                self._scheduled = True
        return entry

    def record_call(self, call: CallRecord) -> None:
        """The `tool_call` event of one call: the call service's outcome hook. Arguments
        are kept as their digest, and in full only where the admitting tag asks for them
        (`audit: arguments`)."""
        principal = call.caller.principal
        fields: dict[str, Any] = {
            "user": principal.user_id,
            "org": principal.org_id,
            "tool": call.call.tool,
            "decision": call.decision,
            "reason": call.reason,
            "latency_ms": round(call.seconds * 1000, 3),
            "arguments_sha256": arguments_digest(call.call.arguments),
        }
        admitted = call.admitted
        if admitted is not None and call.caller.audits_arguments(
            admitted.admitted_by, call.call.tool
        ):
            fields["arguments"] = dict(call.call.arguments)
        if call.ended is not None:
            fields["ended"] = call.ended
        if call.error is not None:
            fields["error"] = call.error
        self.record("tool_call", **fields)

    def flush(self) -> None:
        """Write the events not yet written: whole lines in one O_APPEND write on a kept
        descriptor, so that lines of several processes interleave whole, never torn."""
        self._scheduled = False
        if not self._batch or self.path is None:
            return
        data = b"".join(self._batch)
        written = 0
        try:
            descriptor = self._descriptor()
            while written < len(data):  # a regular file takes it whole but on a full disk
                written += os.write(descriptor, data[written:])
        except OSError as exc:
            # What was not written waits for the next flush; said loudly, since the record
            # is falling behind.
            self._batch[:] = [data[written:]]
            logger.error("audit log %s not written: %s", self.path, exc)
            return
        self._batch.clear()

    def _descriptor(self) -> int:
        """The open file, reopened when it was rotated away (checked once a second)."""
        assert self.path is not None
        now = time.monotonic()
        if self._fd is not None and now - self._checked < self.REOPEN_CHECK:
            return self._fd
        self._checked = now
        try:
            inode: int | None = self.path.stat().st_ino
        except FileNotFoundError:
            inode = None
        if self._fd is None or inode != self._inode:
            self._close_descriptor()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._inode = os.fstat(self._fd).st_ino
        return self._fd

    def close(self) -> None:
        self._closed = True
        self.flush()
        self._close_descriptor()

    def _close_descriptor(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def read(self) -> list[dict[str, Any]]:
        """Every event in the file, oldest first (empty without a file)."""
        self.flush()
        if self.path is None or not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


def arguments_digest(arguments: Mapping[str, Any]) -> str:
    """What the audit log keeps of a call's arguments: enough to match a known value,
    nothing to read one from. Never raises: arguments no JSON can be written of (keys of
    two types, or nested past the writer's recursion; refused calls, whose record says
    why) have the digest of UNENCODABLE."""
    try:
        text = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError, RecursionError):
        text = UNENCODABLE
    return hashlib.sha256(text.encode()).hexdigest()


UNENCODABLE = "\0unencodable"
"""What `arguments_digest` digests for arguments it cannot write (no JSON text is this)."""
