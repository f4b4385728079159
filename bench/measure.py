"""What the benchmarks share: metrics with targets, percentiles, figures for people."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000
NS_PER_US = 1_000


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    """The JSON key; its suffix names the unit of the JSON value."""
    label: str
    scale: int
    """Raw units (nanoseconds, or events per second) per reported unit."""
    unit: str
    target: float | None = None
    """The median must be under this (or at least this, if `higher`)."""
    higher: bool = False
    """Whether more is better (throughput)."""

    def met(self, value: float) -> bool:
        assert self.target is not None
        return value >= self.target if self.higher else value < self.target

    def target_text(self) -> str:
        if self.target is None:
            return ""
        return f"{'>=' if self.higher else '<'} {figure(self.target)} {self.unit}"


def percentile(ordered: Sequence[int], fraction: float) -> int:
    """Nearest-rank percentile of an ascending sequence."""
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def figure(value: float) -> str:
    """A measured value with as many digits as a reader can use."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value >= 0.01 else f"{value:.4f}"
