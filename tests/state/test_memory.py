"""What only the memory backend has to prove: that expired data does not stay in memory."""

from __future__ import annotations

import pytest

from gateway.state import Stream, TTLs
from gateway.state.memory import MemoryStore

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_writes_sweep_away_what_expired_even_if_never_read_again() -> None:
    clock = Clock()
    ttls = TTLs(session=1, events=1, tool_execution=1, tool_results=1, flow=1)
    async with MemoryStore(ttls, stream_max_len=10, sweep_interval=1.0, clock=clock) as store:
        for n in range(500):
            await store.set_session_state(f"s{n}", {"n": n})
            await store.set_flow_state(f"s{n}", "flow", {"n": n})
            await store.append(f"s{n}", Stream.EVENTS, {"n": n})
        held = len(store._values) + len(store._streams)
        assert held == 500 * 4  # state, flow, flow index, stream

        clock.now += 0.5  # nothing expired yet, and too soon for a sweep
        await store.set_session_state("late", {})
        assert len(store._values) + len(store._streams) == held + 1

        clock.now += 0.9  # everything but "late" expired; a write sweeps it away
        await store.set_session_state("new", {})
        assert set(store._values) == {"SESSION:{late}", "SESSION:{new}"}
        assert store._streams == {}
