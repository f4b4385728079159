"""Callables told of what happens on a hot path (a call's outcome, an /mcp request), added
and stopped at any time, also while they are being told."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

H = TypeVar("H")


class Subscribers(Generic[H]):
    """`current` is a tuple, replaced (never changed in place) when one is added or
    stopped: telling them is a plain loop over what was there when it began, however
    they stop themselves or each other meanwhile."""

    def __init__(self, initial: Iterable[H] = (), on_change: Callable[[], None] | None = None):
        self.current: tuple[H, ...] = tuple(initial)
        self._on_change = on_change

    def add(self, subscriber: H) -> Callable[[], None]:
        """Tell `subscriber` from now on; returns what stops it: once (again, it does
        nothing, even when the same callable was added twice)."""
        self.current = (*self.current, subscriber)
        self._changed()
        stopped = False

        def stop() -> None:
            nonlocal stopped
            if stopped:
                return
            stopped = True
            kept = list(self.current)
            kept.remove(subscriber)
            self.current = tuple(kept)
            self._changed()

        return stop

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()
