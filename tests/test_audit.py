"""The audit log: routine events written in batches, others at once, nothing lost on close."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import anyio
import pytest

from gateway.audit import AuditLog

pytestmark = pytest.mark.anyio


def lines(path: Path) -> list[dict[str, object]]:
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines()]


async def test_routine_events_are_written_together_soon_after(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    for n in range(3):
        audit.record("tool_call", n=n)
    assert lines(path) == []  # waiting for the batch
    await anyio.sleep(AuditLog.BATCH_DELAY * 4)
    assert [event["n"] for event in lines(path)] == [0, 1, 2]
    audit.close()


async def test_other_events_are_written_at_once_with_what_waited(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    audit.record("tool_call", n=1)
    audit.record("tool_definition_changed", level=logging.WARNING, tool="x")
    assert [event["event"] for event in lines(path)] == ["tool_call", "tool_definition_changed"]
    audit.close()


async def test_close_and_read_write_the_pending_batch(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    audit.record("tool_call", n=1)
    assert [event["n"] for event in audit.read()] == [1]
    audit.record("tool_call", n=2)
    audit.close()
    assert [event["n"] for event in lines(path)] == [1, 2]


def test_without_a_loop_an_event_is_written_at_once(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    audit.record("tool_call", n=1)
    assert [event["n"] for event in lines(path)] == [1]
    audit.close()


def test_events_the_file_would_not_take_wait_for_the_next_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.jsonl"
    path.mkdir()  # not a file: every write fails
    audit = AuditLog(path)
    audit.record("tool_call", n=1)
    assert "not written" in caplog.text
    path.rmdir()
    audit.record("tool_call", n=2)
    assert [event["n"] for event in lines(path)] == [1, 2]
    audit.close()
