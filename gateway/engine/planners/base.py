"""The planner interface: given the session so far, the model's next envelope.

A planner only answers; the engine validates what it answers (envelopes.py), checks it and
acts. A planner sees the session as a transcript of three kinds of entries, which each
planner maps onto its model's messages: what the caller `Said`, each envelope the model
`Emitted` (as it gave it, valid or not), and what the engine `Told` the model about that
envelope (the results of its calls, a refusal, why it was not a valid envelope, the
caller's answer to its question). Every Emitted is followed by exactly one Told before the
model decides again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Said:
    text: str


@dataclass(frozen=True, slots=True)
class Emitted:
    id: str
    """Unique in the session (the Messages API's tool_use id, where there is one)."""
    data: Any
    """The envelope as the model gave it."""


@dataclass(frozen=True, slots=True)
class Told:
    to: str
    """The id of the Emitted this answers."""
    text: str
    is_error: bool = False


Entry = Said | Emitted | Told


@dataclass(frozen=True, slots=True)
class ToolInfo:
    """A tool the caller may use, as the model is shown it."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Turn:
    system: str
    """The caller's assembled tag prompt (the stable part of every turn)."""
    tools: tuple[ToolInfo, ...]
    """The permitted tools, in a stable order."""
    transcript: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class Answer:
    id: str
    data: Any
    """The envelope's data, to be validated by the engine (None: the model gave none)."""
    usage: Usage = Usage()


class PlannerError(Exception):
    """The planner could not answer (its API failed after its own retries, a script
    ran out): the session fails with this message."""


class Planner(ABC):
    name: str

    @abstractmethod
    async def decide(self, turn: Turn) -> Answer:
        """The model's next envelope for `turn`; PlannerError when there is none."""
