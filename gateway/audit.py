"""The audit log: what happened that an admin must be able to look up later.

One JSON object per line (`audit.jsonl` in the gateway's data directory), appended and
flushed per event, and the same event on the `gateway.audit` logger. Without a file (tests,
one-off commands) events go to the logger only.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("gateway.audit")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    event: str
    at: float
    fields: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(
            {"at": self.at, "event": self.event, **self.fields},
            sort_keys=True,
            separators=(",", ":"),
        )


class AuditLog:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path

    def record(self, event: str, *, level: int = logging.INFO, **fields: Any) -> AuditEvent:
        """Append one event. `level` is for the logger copy: definition changes are
        warnings, routine tool calls are info."""
        entry = AuditEvent(event, time.time(), fields)
        line = entry.to_json()
        logger.log(level, "%s", line)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_APPEND: lines from several processes interleave whole, never torn.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
        return entry

    def read(self) -> list[dict[str, Any]]:
        """Every event in the file, oldest first (empty without a file)."""
        if self.path is None or not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
