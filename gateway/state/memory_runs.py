"""The memory store's run queue: the same contract as the Redis stream's (redis_runs.py),
kept in the process, with the store's clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Run:
    session_id: str
    runner: str
    renewed: float


class MemoryRuns:
    _clock: Callable[[], float]

    def __init__(self) -> None:
        self._run_entries: dict[str, _Run] = {}
        self._run_serial = 0

    async def enlist_run(self, session_id: str, runner: str) -> str:
        self._run_serial += 1
        entry = f"{int(self._clock() * 1000)}-{self._run_serial}"
        self._run_entries[entry] = _Run(session_id, runner, self._clock())
        return entry

    async def renew_run(self, entry: str, runner: str) -> bool:
        run = self._run_entries.get(entry)
        if run is None:
            return False
        run.runner, run.renewed = runner, self._clock()
        return True

    async def end_run(self, entry: str) -> None:
        self._run_entries.pop(entry, None)

    async def lapsed_runs(self, runner: str, silent: float, most: int) -> list[tuple[str, str]]:
        now = self._clock()
        taken: list[tuple[str, str]] = []
        for entry, run in self._run_entries.items():
            if len(taken) == most:
                break
            if now - run.renewed >= silent:
                run.runner, run.renewed = runner, now
                taken.append((entry, run.session_id))
        return taken
