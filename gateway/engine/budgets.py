"""What a session may spend, and what it has spent: checked before every model turn and
every tool call, so the first limit reached ends the session, named with its figures.

Defaults come from gateway.yaml (`engine.budgets`); a tag may only tighten them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

from pydantic import Field

from ..strict import Strict
from .planners.base import Usage

Count = Annotated[int, Field(ge=1)]
Amount = Annotated[float, Field(gt=0, strict=False)]


class Budgets(Strict):
    turns: Count = 25
    """Model turns (repair turns count too)."""
    tool_calls: Count = 50
    """Tool calls made, refused ones included."""
    tokens: Count = 500_000
    """Input and output tokens over every turn (cache reads and writes included)."""
    cost_usd: Amount | None = None
    """Usage times the planner's price table; None: no cap."""
    wall_seconds: Amount = 900
    """From the session's start, waiting for the caller excepted."""
    call_timeout: Amount = 120
    """One tool call, on top of its upstream's own call_timeout."""
    parallel: Count = 8
    """Calls of one `tools` envelope at once."""
    repeats: Count = 3
    """How often the same call (tool and arguments) may run: asked for once more, it
    ends the session instead, as a loop."""
    violations: Count = 3
    """Refused calls (by the tags, or an approval refused) beyond this many end the
    session."""

    def tightened(self, limits: Mapping[str, float]) -> Budgets:
        """These budgets with each of `limits` (the caller's tags' session_budgets) in
        place of a looser one: a tag only tightens."""
        if not limits:
            return self
        values = self.model_dump()
        for name, limit in limits.items():
            mine = values[name]
            values[name] = limit if mine is None else min(mine, limit)
        return Budgets.model_validate(values, strict=False)


class BudgetExhausted(Exception):
    """A limit reached: `name`, what was `used` and the `limit`."""

    def __init__(self, name: str, used: float, limit: float, unit: str = "") -> None:
        self.name, self.used, self.limit = name, used, limit
        unit = f" {unit}" if unit else ""
        super().__init__(
            f"budget {name} exhausted: {_figure(used)}{unit} of {_figure(limit)}{unit}"
        )


@dataclass(slots=True)
class Spent:
    """A session's spending so far (kept in its snapshot, so a resumed session goes on
    from there)."""

    turns: int = 0
    tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    """Wall seconds spent working before the current stretch (a resume adds to it)."""
    violations: int = 0
    calls_seen: dict[str, int] = field(default_factory=dict)
    """How often each call (its key, see `repeat`) was made."""
    _since: float = field(default_factory=time.monotonic)
    _paused: bool = False

    @property
    def tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )

    def add(self, usage: Usage) -> None:
        """One model turn, and what it used."""
        self.turns += 1
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cache_read_tokens += usage.cache_read_tokens
        self.cache_write_tokens += usage.cache_write_tokens
        self.cost_usd += usage.cost_usd

    def summary(self) -> dict[str, Any]:
        """What the session used: kept in its snapshot, and told to its caller."""
        return {
            "turns": self.turns,
            "tool_calls": self.tool_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cost_usd": self.cost_usd,
            "seconds": round(self.wall(), 3),
            "violations": self.violations,
        }

    @classmethod
    def restored(cls, summary: Mapping[str, Any], calls_seen: Mapping[str, int]) -> Spent:
        """The spending a snapshot's `summary()` (and its calls seen) hold."""
        return cls(**summary, calls_seen=dict(calls_seen))

    def wall(self) -> float:
        if self._paused:
            return self.seconds
        return self.seconds + time.monotonic() - self._since

    def pause(self) -> None:
        """The session waits for its caller: that time is not the session's."""
        self.seconds = self.wall()
        self._paused = True

    def resume(self) -> None:
        self._since = time.monotonic()
        self._paused = False

    def before_turn(self, budgets: Budgets) -> None:
        """Raise BudgetExhausted if another model turn would go past a limit."""
        _below("turns", self.turns, budgets.turns, "turns")
        _below("tokens", self.tokens, budgets.tokens, "tokens")
        if budgets.cost_usd is not None:
            _below("cost_usd", self.cost_usd, budgets.cost_usd, "USD")
        _below("wall_seconds", self.wall(), budgets.wall_seconds, "s")

    def before_call(self, budgets: Budgets, key: str) -> None:
        """Raise BudgetExhausted if the call `key` would go past a limit (or repeat)."""
        _below("tool_calls", self.tool_calls, budgets.tool_calls, "calls")
        asked = self.calls_seen.get(key, 0) + 1
        if asked > budgets.repeats:
            raise BudgetExhausted("repeats", asked, budgets.repeats, "times the same call")
        _below("tokens", self.tokens, budgets.tokens, "tokens")
        if budgets.cost_usd is not None:
            _below("cost_usd", self.cost_usd, budgets.cost_usd, "USD")
        _below("wall_seconds", self.wall(), budgets.wall_seconds, "s")

    def call_made(self, key: str) -> None:
        self.tool_calls += 1
        self.calls_seen[key] = self.calls_seen.get(key, 0) + 1

    def violation(self, budgets: Budgets) -> None:
        """Count a refused call; raise BudgetExhausted once there are too many."""
        self.violations += 1
        if self.violations > budgets.violations:
            raise BudgetExhausted("violations", self.violations, budgets.violations, "refusals")


def _below(name: str, used: float, limit: float, unit: str) -> None:
    """Raise unless there is room left: `used` is below `limit`."""
    if used >= limit:
        raise BudgetExhausted(name, used, limit, unit)


def _figure(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


DEFAULT: Final = Budgets()
