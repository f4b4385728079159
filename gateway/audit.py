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
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

logger = logging.getLogger("gateway.audit")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    event: str
    at: float
    fields: dict[str, Any]

    def to_json(self) -> str:
        event = {"at": self.at, "event": self.event, **self.fields}
        return orjson.dumps(event, option=orjson.OPT_SORT_KEYS).decode()


class AuditLog:
    REOPEN_CHECK = 1.0
    """Seconds between checks that the file is still the one open (log rotation)."""
    BATCH_DELAY = 0.05
    """Seconds a routine event may wait for the write of its batch."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._fd: int | None = None
        self._inode: int | None = None
        self._checked = 0.0
        self._batch: list[str] = []
        self._scheduled = False

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
        self._batch.append(line + "\n")
        if level > logging.DEBUG:
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

    def flush(self) -> None:
        """Write the events not yet written: whole lines in one O_APPEND write on a kept
        descriptor, so that lines of several processes interleave whole, never torn."""
        self._scheduled = False
        if not self._batch or self.path is None:
            return
        data = "".join(self._batch).encode()
        self._batch.clear()
        descriptor = self._descriptor()
        while data:
            data = data[os.write(descriptor, data) :]

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
