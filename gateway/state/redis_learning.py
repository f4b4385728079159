"""The Redis store's learning keys (gateway/flows/learning.py): an org's flow runs as capped
lists, its candidate flows as a hash of bodies beside a hash of counts, all in the org's
hash slot and renewed by every write."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from . import codec
from .base import (
    MAX_CANDIDATES,
    JsonObject,
    TTLs,
    candidate_counts_key,
    candidates_key,
    flow_names_key,
    flow_runs_key,
)

Client = aioredis.Redis | RedisCluster
T = TypeVar("T")


class RedisLearning:
    ttls: TTLs
    _call: Callable[..., Awaitable[Any]]

    async def record_flow_run(self, org: str, flow: str, run: Mapping[str, Any], keep: int) -> None:
        key, names = flow_runs_key(org, flow), flow_names_key(org)
        ttl = int(self.ttls.learning * 1000)
        encoded = codec.encode(run)

        async def record(r: Client) -> None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.lpush(key, encoded)
                pipe.ltrim(key, 0, keep - 1)
                pipe.pexpire(key, ttl)
                pipe.sadd(names, flow)
                pipe.pexpire(names, ttl)
                await pipe.execute()

        await self._call(record)

    async def flow_runs(self, org: str, flow: str, most: int) -> list[JsonObject]:
        key = flow_runs_key(org, flow)
        raw: list[bytes] = await self._call(lambda r: r.lrange(key, 0, most - 1))
        return [codec.decode(item, key) for item in raw]

    async def flow_names(self, org: str) -> list[str]:
        raw: set[bytes | str] = await self._call(lambda r: r.smembers(flow_names_key(org)))
        return sorted(item.decode() if isinstance(item, bytes) else item for item in raw)

    async def count_candidate(self, org: str, shape: str, candidate: Mapping[str, Any]) -> int:
        bodies, counts = candidates_key(org), candidate_counts_key(org)
        ttl = int(self.ttls.learning * 1000)
        encoded = codec.encode(candidate)

        async def count(r: Client) -> int:
            known = await r.hexists(counts, shape)
            if not known and await r.hlen(counts) >= MAX_CANDIDATES:
                return 0
            async with r.pipeline(transaction=True) as pipe:
                pipe.hsetnx(bodies, shape, encoded)
                pipe.hincrby(counts, shape, 1)
                pipe.pexpire(bodies, ttl)
                pipe.pexpire(counts, ttl)
                done = await pipe.execute()
            return int(done[1])

        result: int = await self._call(count)
        return result

    async def flow_candidates(self, org: str) -> list[tuple[str, JsonObject, int]]:
        bodies_key, counts_key = candidates_key(org), candidate_counts_key(org)

        async def read(r: Client) -> tuple[dict[Any, Any], dict[Any, Any]]:
            async with r.pipeline(transaction=False) as pipe:
                pipe.hgetall(bodies_key)
                pipe.hgetall(counts_key)
                bodies, counts = await pipe.execute()
            return bodies, counts

        bodies, counts = await self._call(read)
        found = []
        for raw_shape, body in bodies.items():
            shape = raw_shape.decode() if isinstance(raw_shape, bytes) else raw_shape
            count = counts.get(raw_shape, counts.get(shape, 0))
            found.append((shape, codec.decode(body, bodies_key), int(count)))
        return found
