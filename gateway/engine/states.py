"""A session's states, the A2A task states, and the only moves between them.

    submitted ──> working ──> completed
        │          │  ↑ │
        │          │  │ └──> input_required (a question, an approval) ──> working
        │          │  │                         │
        ├──────────┴──┴─────────────────────────┴──> failed, canceled
        └──> rejected (never started: no planner, a refused start)

completed, failed, canceled and rejected are final. A move the table does not hold is a
bug of the engine's, raised at once (IllegalTransition), never written to a session.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final


class SessionState(StrEnum):
    SUBMITTED = "submitted"
    WORKING = "working"
    INPUT_REQUIRED = "input_required"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    REJECTED = "rejected"


S = SessionState
TRANSITIONS: Final[Mapping[SessionState, frozenset[SessionState]]] = {
    S.SUBMITTED: frozenset({S.WORKING, S.REJECTED, S.FAILED, S.CANCELED}),
    S.WORKING: frozenset({S.INPUT_REQUIRED, S.COMPLETED, S.FAILED, S.CANCELED}),
    S.INPUT_REQUIRED: frozenset({S.WORKING, S.FAILED, S.CANCELED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELED: frozenset(),
    S.REJECTED: frozenset(),
}
FINAL: Final = frozenset(state for state, after in TRANSITIONS.items() if not after)
RUNNING: Final = frozenset({S.SUBMITTED, S.WORKING})
"""An engine is on it (or was, until it stopped: then another resumes it)."""


class IllegalTransition(RuntimeError):
    """A move between session states that the table does not hold: a bug."""


def transition(current: SessionState, new: SessionState) -> SessionState:
    """`new`, when a session in `current` may move there; else IllegalTransition."""
    if new not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none: it is final"
        raise IllegalTransition(
            f"a session cannot go from {current} to {new} (from {current}: {allowed})"
        )
    return new
