"""What an upstream connection is doing, and how its failures are told."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

BACKOFF_BASE = 0.2
BACKOFF_CAP = 30.0


class State(StrEnum):
    CONNECTING = "connecting"
    READY = "ready"
    DEGRADED = "degraded"
    """Connected, but calls have been failing (timeouts, lost answers); the breaker may be
    open."""
    DOWN = "down"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class Status:
    state: State
    since: float
    """Wall-clock time of the last change."""
    error: str | None = None
    """Why it is down or degraded, or why it last went down."""
    failures: int = 0
    """Connection attempts (or, when degraded, calls) that failed in a row."""

    @property
    def reported(self) -> State:
        """The state to tell operators: an upstream trying again after failed attempts is
        down until an attempt succeeds (its retry is a moment of its backoff, and which
        of the two a reader happens to see must not change the answer)."""
        if self.state is State.CONNECTING and self.failures:
            return State.DOWN
        return self.state


def backoff(failures: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait after `failures` failures in a row: exponential, capped, with full
    jitter so that upstreams failing together do not retry together."""
    return random.uniform(0, min(cap, base * 2 ** min(failures, 30)))


def describe(exc: BaseException) -> str:
    """The innermost meaningful message of what may be nested exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
