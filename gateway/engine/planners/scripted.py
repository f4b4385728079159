"""A planner that answers from a list of envelopes, in order: for tests, demos and
sessions whose steps are known beforehand. It reads nothing of the session but how far
it has come."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ...errors import ConfigError, ConfigIssue
from .base import Answer, Emitted, Planner, PlannerError, Turn


class ScriptedPlanner(Planner):
    name = "scripted"

    def __init__(self, envelopes: Iterable[Mapping[str, Any]]) -> None:
        self._envelopes = [dict(envelope) for envelope in envelopes]

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
        # Where a session is in the script is how many envelopes it has had: one planner
        # serves every session, and a resumed one goes on where it was.
        done = sum(isinstance(entry, Emitted) for entry in turn.transcript)
        if done >= len(self._envelopes):
            raise PlannerError(f"the script's {len(self._envelopes)} envelopes are all used")
        return Answer(f"scripted-{done + 1}", self._envelopes[done])
