"""The Redis store's index of each user's sessions: a sorted set by creation time, in the
org's hash slot, renewed to a session's TTL by every addition."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from .base import TTLs, sessions_index_key

Client = aioredis.Redis | RedisCluster


class RedisIndex:
    ttls: TTLs
    _call: Callable[..., Awaitable[Any]]

    async def index_session(self, org: str, user: str, session_id: str, created: float) -> None:
        key = sessions_index_key(org, user)
        ttl = int(self.ttls.session * 1000)

        async def add(r: Client) -> None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.zadd(key, {session_id: created})
                pipe.pexpire(key, ttl)
                await pipe.execute()

        await self._call(add)

    async def indexed_sessions(
        self, org: str, user: str, before: float | None, limit: int
    ) -> list[tuple[str, float]]:
        key = sessions_index_key(org, user)
        high = "+inf" if before is None else f"({before!r}"
        found: list[tuple[bytes | str, float]] = await self._call(
            lambda r: r.zrevrangebyscore(key, high, "-inf", start=0, num=limit, withscores=True)
        )
        return [
            (member.decode() if isinstance(member, bytes) else member, float(score))
            for member, score in found
        ]

    async def unindex_sessions(self, org: str, user: str, session_ids: Sequence[str]) -> None:
        if session_ids:
            key = sessions_index_key(org, user)
            await self._call(lambda r: r.zrem(key, *session_ids))
