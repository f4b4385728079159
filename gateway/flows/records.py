"""What a run of a flow keeps of its steps, and how it ends: what `steps.<id>` reads
(step_view), each step's progress as FLOW:{session}:{flow} holds it (StepRecord), and the
run's end (FlowEnd)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ..state.base import START

StepStatus = Literal["running", "completed", "skipped", "failed"]
FINISHED: Final = frozenset({"completed", "skipped", "failed"})


def step_view(
    status: str, result: Mapping[str, Any] | None = None, error: str = ""
) -> dict[str, Any]:
    """What `steps.<id>` reads: the step's `status`, its result's `structured` content,
    `text` (its text blocks joined), `content` (the blocks), `is_error`, and `error` (why it
    did not complete, in words)."""
    result = result or {}
    content = result.get("content") or []
    texts = [
        block.get("text", "")
        for block in content
        if isinstance(block, dict) and block.get("type") == "text"
    ]
    return {
        "status": status,
        "structured": result.get("structuredContent"),
        "text": "\n".join(texts),
        "content": content,
        "is_error": bool(result.get("isError", False)),
        "error": error,
    }


@dataclass(slots=True)
class StepRecord:
    """A step's progress, as FLOW:{session}:{flow} keeps it."""

    status: StepStatus
    attempt: int = 1
    key: str = ""
    since: str = START
    """The session's last event before the attempt's intent: where its journal starts."""
    view: dict[str, Any] | None = None
    error: str = ""
    error_class: str = ""
    ms: float = 0.0

    def dump(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "attempt": self.attempt,
            "key": self.key,
            "since": self.since,
            "view": self.view,
            "error": self.error,
            "error_class": self.error_class,
            "ms": round(self.ms, 3),
        }

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> StepRecord:
        return cls(**data)


@dataclass(slots=True)
class FlowEnd:
    """How a run of a flow stopped."""

    status: Literal["completed", "failed", "replan", "held"]
    output: Any = None
    text: str = ""
    """The output as text (completed), or why it stopped (failed, replan)."""
    step: str | None = None
    """The step that failed, for replan and failed; for held, the first step held."""
    held: list[dict[str, Any]] = field(default_factory=list)
    """The calls of unknown outcome that wait for the user (held)."""
    after: str = START
    """Where the journal of a held run starts."""
    records: dict[str, StepRecord] = field(default_factory=dict)
    """Every step's progress, as the run left it."""
    asking: Literal["outcome", "approval"] = "outcome"
    """What a held run asks the user: whether to send again the calls of unknown outcome
    (`held`), or whether to run the flow at all (its tools need the user's approval)."""
    replayed: bool = False
    """The run had ended before: this is its end as it was written down (not a new run)."""
