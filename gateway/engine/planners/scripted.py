"""A planner that answers from a list of envelopes, in order: for tests, demos and
sessions whose steps are known beforehand. It reads nothing of the session."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ...errors import ConfigError, ConfigIssue
from .base import Answer, Planner, PlannerError, Turn


class ScriptedPlanner(Planner):
    name = "scripted"

    def __init__(self, envelopes: Iterable[Mapping[str, Any]]) -> None:
        self._envelopes = [dict(envelope) for envelope in envelopes]
        self._next = 0

    @classmethod
    def from_file(cls, path: Path) -> ScriptedPlanner:
        """A YAML list of envelopes (mappings); ConfigError naming the file otherwise."""
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError([ConfigIssue(str(path), f"cannot read the script: {exc}")]) from None
        if not isinstance(loaded, list) or not all(isinstance(e, dict) for e in loaded):
            problem = "a script is a YAML list of envelopes (mappings)"
            raise ConfigError([ConfigIssue(str(path), problem)])
        return cls(loaded)

    async def decide(self, turn: Turn) -> Answer:
        if self._next >= len(self._envelopes):
            raise PlannerError(f"the script's {len(self._envelopes)} envelopes are all used")
        self._next += 1
        return Answer(f"scripted-{self._next}", self._envelopes[self._next - 1])
