"""The Redis store's run queue: the stream RUNS with the consumer group `engines`, each run
under way an entry pending for the replica that runs it. Its runner renews the entry
with XCLAIM (resetting its idle time) whenever it renews its claim; a replica that dies
stops renewing, and another takes its runs over with XAUTOCLAIM once they have been idle
a lease, so finding the sessions that lost their engine costs what they are, never a
scan of every session."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from .base import RUNS_GROUP, RUNS_KEY

Client = aioredis.Redis | RedisCluster

SCANS = 1_000
"""XAUTOCLAIM calls a round makes at most: every pending run of a big queue, a window at
a time (ten times COUNT each)."""

ENLIST = """
redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[2], '$', 'MKSTREAM')
local id = redis.call('XADD', KEYS[1], '*', 'session', ARGV[1])
redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
return id
"""
"""Add the run and deliver it to its runner at once: every entry is added by this script,
which reads it in the same atomic step, so the one undelivered entry is the one added."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisRuns:
    _call: Callable[..., Awaitable[Any]]
    _redis: Any

    _enlist_script: Any = None

    async def enlist_run(self, session_id: str, runner: str) -> str:
        if self._enlist_script is None:
            self._enlist_script = self._redis.register_script(ENLIST)
        script = self._enlist_script
        args = [session_id, RUNS_GROUP, runner]
        return _text(await self._call(lambda r: script(keys=[RUNS_KEY], args=args, client=r)))

    async def renew_run(self, entry: str, runner: str) -> bool:
        claimed = await self._call(
            lambda r: r.xclaim(RUNS_KEY, RUNS_GROUP, runner, 0, [entry], justid=True)
        )
        return bool(claimed)

    async def end_run(self, entry: str) -> None:
        async def end(r: Client) -> None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.xack(RUNS_KEY, RUNS_GROUP, entry)
                pipe.xdel(RUNS_KEY, entry)
                await pipe.execute()

        await self._call(end)

    async def lapsed_runs(self, runner: str, silent: float, most: int) -> list[tuple[str, str]]:
        idle = int(silent * 1000)

        async def take(r: Client, cursor: str) -> Any:
            try:
                return await r.xautoclaim(RUNS_KEY, RUNS_GROUP, runner, idle, cursor, count=most)
            except aioredis.ResponseError as exc:
                if "NOGROUP" in str(exc):  # no run was ever enlisted
                    return None
                raise

        taken: list[tuple[str, str]] = []
        cursor = "0-0"
        # XAUTOCLAIM looks at ten times COUNT pending entries a call: live runs older than
        # the silent ones would hide them, so it goes on by its cursor through them all.
        for _ in range(SCANS):
            found = await self._call(lambda r, at=cursor: take(r, at))
            if not found:
                break
            for entry, fields in found[1]:
                if fields:  # an entry deleted meanwhile comes back without its fields
                    session = fields.get(b"session") or fields.get("session")
                    if session is not None:
                        taken.append((_text(entry), _text(session)))
            cursor = _text(found[0])
            if cursor == "0-0" or len(taken) >= most:
                break
        return taken
