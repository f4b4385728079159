"""A circuit breaker: after repeated failures, stop calling a dead dependency for a while.

Closed: calls go through. After `threshold` consecutive failures it opens for `cooldown`
seconds (doubling on every failed probe, up to `max_cooldown`): calls fail at once. Then
it is half-open: calls go through again, and the first success closes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Breaker:
    threshold: int = 3
    cooldown: float = 0.5
    max_cooldown: float = 5.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    failures: int = 0
    opened_until: float = 0.0
    _current_cooldown: float = field(default=0.0, repr=False)

    def retry_after(self) -> float:
        """Seconds until calls may go through again; 0 when they may now."""
        return max(0.0, self.opened_until - self.clock())

    def success(self) -> None:
        self.failures = 0
        self.opened_until = 0.0
        self._current_cooldown = 0.0

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            if self._current_cooldown:
                self._current_cooldown = min(self._current_cooldown * 2, self.max_cooldown)
            else:
                self._current_cooldown = self.cooldown
            self.opened_until = self.clock() + self._current_cooldown
