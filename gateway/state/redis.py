"""The Redis backend: the state store shared by every replica.

- One connection pool (`redis.asyncio`); every operation bounded by `op_timeout`, and a
  circuit breaker that stops calling a dead server: while it is down every operation
  raises `StateUnavailable` at once, and the first success after it returns closes it.
- Streams are Redis Streams, appended by a script (XADD, a trim to the cap that records
  the newest id it removed, EXPIRE, PUBLISH); a read is XRANGE plus XINFO, whose
  `max-deleted-entry-id` (Redis 7) tells a reader that events it had not read are gone.
- `follow` does not hold a blocking XREAD per follower. Every append also publishes the new
  id on a channel named after the stream's key; one pub/sub connection per store listens
  for the streams its followers wait on and wakes them, and they read with XRANGE. Pub/sub
  only wakes: the events themselves are in the stream, so a lost wake-up delays a follower
  (until `recheck` seconds pass or the connection is back) but loses nothing.
- Start-up does not wait for Redis: `start` returns at once and a background task connects
  with backoff and jitter; until it has, `status()` says not ready and why, and operations
  raise `StateUnavailable`.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import redis.asyncio as aioredis
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..breaker import Breaker
from ..errors import StateError, StateUnavailable
from . import codec
from .base import (
    START,
    JsonObject,
    StateStore,
    StoreStatus,
    Stream,
    StreamBatch,
    StreamEvent,
    StreamGap,
    TTLs,
    assembled,
    channel_name,
    flow_fields,
    flow_key,
    format_id,
    parse_id,
    session_claim_key,
    session_flows_key,
    session_id_of,
    session_key,
    stream_key,
)
from .redis_index import RedisIndex
from .redis_learning import RedisLearning
from .redis_pubsub import Hub, Listener
from .redis_runs import RedisRuns
from .redis_scripts import APPEND, APPEND_CLAIMED, CLAIM, READ, RELEASE, SET_CLAIMED

logger = logging.getLogger("gateway.state")

T = TypeVar("T")
Client = aioredis.Redis | RedisCluster
MIN_REDIS = (7, 0)
"""XINFO's max-deleted-entry-id and EXPIRE's NX/GT options arrived in Redis 7.0."""
SUBSCRIBER_BUFFER = 1000
PROBE_INTERVAL = 0.5
"""Seconds a readiness probe's answer is reused (so /ready polls cannot hammer Redis)."""
PROBE_TIMEOUT = 0.25
"""Seconds a readiness probe (a PING) may take."""
LONG_OP_TIMEOUT = 30.0
"""For operations that scan the keyspace (diagnostics)."""
LAST_ID = (2**64 - 1, 2**64 - 1)
"""The greatest stream id there is."""
POOL_WAIT = 0.8
"""Of an operation's bound, how long it may wait for a pooled connection."""
_DOWN = (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError)
_FIELD = b"v"


def redact(url: str) -> str:
    """`url` with its password replaced, for logs and readiness reports."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    netloc = f"{user}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(eq=False)
class _Waiter:
    wakeup: anyio.Event = field(default_factory=anyio.Event)

    def wake(self) -> None:
        self.wakeup.set()


class RedisStore(RedisRuns, RedisIndex, RedisLearning, StateStore):
    def __init__(
        self,
        url: str,
        ttls: TTLs,
        stream_max_len: int,
        op_timeout: float = 0.5,
        recheck: float = 60.0,
        max_connections: int = 200,
    ) -> None:
        if stream_max_len < 1:
            raise ValueError("stream_max_len must be at least 1")
        self.url = redact(url)
        self.ttls = ttls
        self.stream_max_len = stream_max_len
        self._raw_url = url
        self._op_timeout = op_timeout
        self._recheck = recheck
        self._max_connections = max_connections
        # Capped at 2 s so that a returned server is used again within a few seconds.
        self._breaker = Breaker(threshold=3, cooldown=0.25, max_cooldown=2.0)
        self._ready = False
        self._reason: str | None = "not started"
        self._closed = False
        self._redis: Client | None = None
        self._hub: Hub | None = None
        self._stack: AsyncExitStack | None = None
        self._tasks: TaskGroup | None = None
        self._trim_slack = max(1, min(100, stream_max_len // 10))
        self._append_script: Any = None
        self._append_claimed_script: Any = None
        self._read_script: Any = None
        self._claim_script: Any = None
        self._release_script: Any = None
        self._set_claimed_script: Any = None
        self._probed_at = -math.inf
        self._probe_failure: str | None = None
        """Why the last readiness probe failed; None when it succeeded (or none ran)."""
        self._probing = anyio.Lock()

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._closed = False
        scheme, _, rest = self._raw_url.partition("://")
        if scheme.endswith("+cluster"):
            self._redis = RedisCluster.from_url(
                f"{scheme.removesuffix('+cluster')}://{rest}",
                socket_timeout=self._op_timeout,
                socket_connect_timeout=self._op_timeout,
                max_connections=self._max_connections,
                retry=Retry(NoBackoff(), 1),
            )
        else:
            # Past max_connections an operation waits for a connection (most of its
            # bound), rather than failing at once: a burst of streams opening together
            # is load, not Redis being down, and must not open the breaker.
            pool = aioredis.BlockingConnectionPool.from_url(
                self._raw_url,
                max_connections=self._max_connections,
                timeout=self._op_timeout * POOL_WAIT,
                socket_timeout=self._op_timeout,
                socket_connect_timeout=self._op_timeout,
                health_check_interval=30,
                # A pooled connection that died with its server fails on first use: one
                # retry at once, on a fresh connection, is what recovers; redis-py's default
                # backoff (seconds) would outlast every operation's bound.
                retry=Retry(NoBackoff(), 1),
            )
            self._redis = aioredis.Redis.from_pool(pool)
        self._hub = Hub(
            self._redis.pubsub(),
            self.url,
            self._op_timeout,
            lambda operation: self._call(lambda _r: operation()),
            _DOWN,
        )
        self._append_script = self._redis.register_script(APPEND)
        self._append_claimed_script = self._redis.register_script(APPEND_CLAIMED)
        self._read_script = self._redis.register_script(READ)
        self._claim_script = self._redis.register_script(CLAIM)
        self._release_script = self._redis.register_script(RELEASE)
        self._set_claimed_script = self._redis.register_script(SET_CLAIMED)
        self._stack = AsyncExitStack()
        self._tasks = await self._stack.enter_async_context(anyio.create_task_group())
        self._tasks.start_soon(self._hub.run)
        # One attempt now, so that a store started beside a live Redis is ready when
        # `start` returns; the rest in the background, so that start-up never waits long.
        if not await self._try_connect():
            logger.warning("state store %s not ready: %s; retrying", self.url, self._reason)
            self._tasks.start_soon(self._connect)

    async def aclose(self) -> None:
        self._closed = True
        self._ready, self._reason = False, "closed"
        if self._hub is not None:
            await self._hub.aclose()  # wakes every follower, which then sees the close
        if self._tasks is not None:
            self._tasks.cancel_scope.cancel()
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = self._tasks = None
        self._hub = None
        if self._redis is not None:
            with anyio.CancelScope(shield=True):
                await self._redis.aclose()
            self._redis = None

    async def _connect(self) -> None:
        """Until Redis answers: retry with backoff and jitter, never giving up or crashing;
        `status()` says why it is not ready meanwhile."""
        backoff = ExponentialWithJitterBackoff(base=0.05, cap=5.0)
        failures = 1  # start() made the first attempt
        while not self._closed and not await self._try_connect():
            if self._reason and "too old" in self._reason:
                return
            failures += 1
            if failures % 20 == 0:
                logger.warning("state store %s not ready: %s", self.url, self._reason)
            await anyio.sleep(backoff.compute(failures))

    async def _try_connect(self) -> bool:
        try:
            with anyio.fail_after(max(self._op_timeout, 2.0)):
                info = await self._client().info("server")
        except (*_DOWN, ResponseError) as exc:
            self._reason = f"cannot reach Redis: {exc or type(exc).__name__}"
            return False
        version = str(info.get("redis_version", "0"))
        parsed = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
        if parsed < MIN_REDIS:
            self._reason = f"Redis {version} is too old: the gateway needs 7.0 or newer"
            logger.error("state store %s: %s", self.url, self._reason)
            return False
        self._ready, self._reason = True, None
        logger.info("state store %s ready (Redis %s)", self.url, version)
        return True

    def status(self) -> StoreStatus:
        if not self._ready:
            return StoreStatus(False, self.url, self._reason)
        if self._breaker.retry_after() > 0:
            return StoreStatus(False, self.url, "Redis stopped answering; retrying")
        if self._probe_failure is not None:
            return StoreStatus(
                False, self.url, f"Redis did not answer a PING: {self._probe_failure}"
            )
        return StoreStatus(True, self.url)

    async def probe(self) -> StoreStatus:
        # One PING at a time and at most one per PROBE_INTERVAL, whoever asks; through
        # the breaker, so that an open breaker is not ready and a PING that fails counts
        # against it as any operation's failure does.
        if time.monotonic() - self._probed_at >= PROBE_INTERVAL:
            async with self._probing:
                if time.monotonic() - self._probed_at >= PROBE_INTERVAL:
                    try:
                        await self._call(lambda r: r.ping(), seconds=PROBE_TIMEOUT)
                        self._probe_failure = None
                    except StateUnavailable as exc:
                        self._probe_failure = exc.reason
                    except StateError as exc:  # answered, but not as a PING should be
                        self._probe_failure = str(exc)
                    self._probed_at = time.monotonic()
        return self.status()

    def _client(self) -> Client:
        if self._redis is None:
            raise StateUnavailable(self.url, "store not started")
        return self._redis

    async def _call(
        self, operation: Callable[[Client], Awaitable[T]], seconds: float | None = None
    ) -> T:
        """Run one operation, bounded in time, behind the breaker."""
        if not self._ready:
            raise StateUnavailable(self.url, self._reason or "not connected", 1.0)
        wait = self._breaker.retry_after()
        if wait > 0:
            raise StateUnavailable(self.url, "Redis is not answering", wait)
        try:
            with anyio.fail_after(seconds or self._op_timeout):
                result = await operation(self._client())
        except _DOWN as exc:
            if _exhausted(exc):  # every connection busy: load, not a failure of Redis
                raise StateUnavailable(self.url, "every connection is busy", 0.5) from exc
            self._breaker.failure()
            reason = str(exc) or f"no answer within {self._op_timeout:g} s"
            raise StateUnavailable(self.url, reason, max(self._breaker.retry_after(), 0.5)) from exc
        self._breaker.success()
        return result

    async def ping(self) -> None:
        await self._call(lambda r: r.ping())

    # --- values ------------------------------------------------------------------------

    async def _get_value(self, key: str) -> JsonObject | None:
        raw = await self._call(lambda r: r.get(key))
        return None if raw is None else codec.decode(raw, key)

    async def _set_value(self, key: str, value: Mapping[str, Any], ttl: float) -> None:
        encoded = codec.encode(value)
        await self._call(lambda r: r.set(key, encoded, px=_ms(ttl)))

    async def _take_value(self, key: str) -> JsonObject | None:
        raw = await self._call(lambda r: r.getdel(key))
        return None if raw is None else codec.decode(raw, key)

    async def set_claimed_session_state(
        self, session_id: str, state: Mapping[str, Any], owner: str, ttl: float | None = None
    ) -> bool:
        keys = [session_claim_key(session_id), session_key(session_id)]
        args = [owner, codec.encode(state), _ms(ttl or self.ttls.session)]
        done = await self._call(lambda r: self._set_claimed_script(keys=keys, args=args, client=r))
        return bool(done)

    async def session_ids(self) -> list[str]:
        async def scan(r: Client) -> list[str]:
            found = [_text(key) async for key in r.scan_iter(match="SESSION:{*}", count=1000)]
            return [session_id for key in found if (session_id := session_id_of(key)) is not None]

        return await self._call(scan, seconds=LONG_OP_TIMEOUT)

    async def claim_session(self, session_id: str, owner: str, seconds: float) -> bool:
        keys, args = [session_claim_key(session_id)], [owner, _ms(seconds)]
        done = await self._call(lambda r: self._claim_script(keys=keys, args=args, client=r))
        return bool(done)

    async def release_session(self, session_id: str, owner: str) -> None:
        keys, args = [session_claim_key(session_id)], [owner]
        await self._call(lambda r: self._release_script(keys=keys, args=args, client=r))

    async def touch_session(self, session_id: str) -> bool:
        index = session_flows_key(session_id)

        async def touch(r: Client) -> bool:
            # Not a transaction: a touch needs no atomicity, and redis-py's cluster
            # pipeline fails on SMEMBERS inside one.
            async with r.pipeline(transaction=False) as pipe:
                pipe.pexpire(session_key(session_id), _ms(self.ttls.session))
                for stream in Stream:
                    pipe.pexpire(stream_key(session_id, stream), _ms(self.ttls.stream(stream)))
                pipe.pexpire(index, _ms(self.ttls.flow))
                pipe.smembers(index)
                found = await pipe.execute()
            flows: set[bytes | str] = found[-1]
            if flows:
                async with r.pipeline(transaction=True) as pipe:
                    for flow_id in flows:
                        pipe.pexpire(flow_key(session_id, _text(flow_id)), _ms(self.ttls.flow))
                    await pipe.execute()
            return bool(found[0])

        return await self._call(touch)

    async def delete_session(self, session_id: str) -> None:
        index = session_flows_key(session_id)

        async def delete(r: Client) -> None:
            flows = await r.smembers(index)
            keys = [session_key(session_id), index, session_claim_key(session_id)]
            keys += [stream_key(session_id, stream) for stream in Stream]
            keys += [flow_key(session_id, _text(flow_id)) for flow_id in flows]
            await r.unlink(*keys)

        await self._call(delete)

    async def get_flow_state(self, session_id: str, flow_id: str) -> JsonObject | None:
        key = flow_key(session_id, flow_id)

        async def read(r: Client) -> JsonObject | None:
            try:
                fields = await r.hgetall(key)
            except ResponseError as exc:
                if "WRONGTYPE" not in str(exc):
                    raise
                # Written whole by a gateway before FLOW states were hashes: read as such.
                raw = await r.get(key)
                return None if raw is None else codec.decode(raw, key)
            return assembled(fields, key) if fields else None

        return await self._call(read)

    async def set_flow_state(
        self, session_id: str, flow_id: str, state: Mapping[str, Any], ttl: float | None = None
    ) -> None:
        await self._flow_fields(session_id, flow_id, flow_fields(state), ttl, replace=True)

    async def update_flow_state(
        self, session_id: str, flow_id: str, changes: Mapping[str, Any], ttl: float | None = None
    ) -> None:
        await self._flow_fields(session_id, flow_id, flow_fields(changes), ttl, replace=False)

    async def _flow_fields(
        self,
        session_id: str,
        flow_id: str,
        fields: dict[str, bytes],
        ttl: float | None,
        replace: bool,
    ) -> None:
        ttl_ms = _ms(ttl or self.ttls.flow)
        index = session_flows_key(session_id)
        key = flow_key(session_id, flow_id)

        async def store(r: Client) -> None:
            try:
                await write(r, replace, fields)
            except ResponseError as exc:
                if replace or "WRONGTYPE" not in str(exc):
                    raise
                # A state written whole, before FLOW states were hashes: merged with the
                # changes and written again, as a hash.
                held = await r.get(key)
                whole = flow_fields(codec.decode(held, key)) if held is not None else {}
                await write(r, True, {**whole, **fields})

        async def write(r: Client, replace: bool, fields: dict[str, bytes]) -> None:
            async with r.pipeline(transaction=True) as pipe:
                if replace:
                    pipe.delete(key)
                if fields:
                    pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                pipe.pexpire(key, ttl_ms)
                pipe.sadd(index, flow_id)
                # The index outlives every flow it lists, so a touch can always reach them.
                pipe.pexpire(index, ttl_ms, nx=True)
                pipe.pexpire(index, ttl_ms, gt=True)
                await pipe.execute()

        await self._call(store)

    # --- streams -----------------------------------------------------------------------

    async def append(self, session_id: str, stream: Stream, event: Mapping[str, Any]) -> str:
        return (await self._append(session_id, stream, [codec.encode(event)]))[0]

    async def append_many(
        self, session_id: str, stream: Stream, events: Sequence[Mapping[str, Any]]
    ) -> list[str]:
        encoded = [codec.encode(event) for event in events]
        return await self._append(session_id, stream, encoded) if encoded else []

    async def _append(self, session_id: str, stream: Stream, encoded: list[bytes]) -> list[str]:
        key = stream_key(session_id, stream)
        ttl_ms = _ms(self.ttls.stream(stream))
        args = [self.stream_max_len, self._trim_slack, ttl_ms, *encoded]
        added = await self._call(lambda r: self._append_script(keys=[key], args=args, client=r))
        return [_text(event_id) for event_id in added]

    async def append_claimed(
        self, session_id: str, stream: Stream, event: Mapping[str, Any], owner: str
    ) -> str | None:
        encoded = codec.encode(event)
        keys = [stream_key(session_id, stream), session_claim_key(session_id)]
        args = [self.stream_max_len, self._trim_slack, _ms(self.ttls.stream(stream)), owner]
        added = await self._call(
            lambda r: self._append_claimed_script(keys=keys, args=[*args, encoded], client=r)
        )
        return _text(added[0]) if added else None

    async def read(
        self, session_id: str, stream: Stream, after_id: str = START, limit: int = 100
    ) -> StreamBatch:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        key = stream_key(session_id, stream)
        after = parse_id(after_id)
        if after == LAST_ID:  # nothing can come after it (and Redis refuses "(" of it)
            return StreamBatch(())
        args = [f"({format_id(after)}", limit]
        found = await self._call(lambda r: self._read_script(keys=[key], args=args, client=r))
        entries, deleted = found
        if deleted is None:
            # No such key: the stream expired (or never was).
            return StreamBatch((), StreamGap(after_id, None) if after != (0, 0) else None)
        deleted_id = _text(deleted)
        gap = None
        if deleted_id != "0-0" and after < parse_id(deleted_id):
            gap = StreamGap(after_id, deleted_id)
        events = tuple(
            StreamEvent(_text(entry_id), codec.decode(fields[fields.index(_FIELD) + 1], key))
            for entry_id, fields in entries
        )
        return StreamBatch(events, gap)

    async def follow(
        self, session_id: str, stream: Stream, after_id: str = START
    ) -> AsyncGenerator[StreamBatch, None]:
        key = stream_key(session_id, stream)
        parse_id(after_id)
        waiter = _Waiter()
        limit = 100
        async with self._listening(key, Listener(lambda _data: waiter.wake(), waiter.wake)):
            while not self._closed:
                # A fresh wake-up before each read: an append between the read and the
                # wait still wakes this follower.
                waiter.wakeup = anyio.Event()
                try:
                    batch = await self.read(session_id, stream, after_id, limit)
                except StateUnavailable as exc:
                    # The events wait in the stream: ride the outage out, and read on
                    # from the same id once Redis is back.
                    await anyio.sleep(min(max(exc.retry_after, 0.1), 1.0))
                    continue
                if batch.events:
                    after_id = batch.events[-1].id
                elif batch.gap is not None:
                    after_id = batch.gap.lost_through or START
                if batch.events or batch.gap:
                    yield batch
                    if len(batch.events) == limit:
                        continue  # more may be waiting
                # The stream had nothing more when read: wait to be woken rather than read
                # again. Wake-ups are only a hint (pub/sub may drop one), so a follower
                # also reads again after a while, jittered so that followers spread out.
                with anyio.move_on_after(self._recheck * random.uniform(0.5, 1.0)):
                    await waiter.wakeup.wait()

    # --- pub/sub -----------------------------------------------------------------------

    async def pub_event(self, session_id: str, payload: Mapping[str, Any]) -> int:
        encoded = codec.encode(payload)
        received: int = await self._call(lambda r: r.publish(channel_name(session_id), encoded))
        return received

    @asynccontextmanager
    async def subscribe(self, session_id: str) -> AsyncIterator[AsyncIterator[JsonObject]]:
        channel = channel_name(session_id)
        sender, receiver = anyio.create_memory_object_stream[JsonObject](SUBSCRIBER_BUFFER)

        def deliver(data: bytes) -> None:
            _offer(sender, codec.decode(data, channel), channel)

        try:
            listener = Listener(deliver, lambda: None)
            async with self._listening(channel, listener):
                yield receiver
        finally:  # both, also when the subscription failed or was cancelled unconfirmed
            sender.close()
            receiver.close()

    def _listening(self, channel: str, listener: Listener) -> AbstractAsyncContextManager[None]:
        if self._hub is None:
            raise StateUnavailable(self.url, "store not started")
        return self._hub.listening(channel, listener)

    # --- diagnostics -------------------------------------------------------------------

    async def debug_keys(self, pattern: str = "*") -> dict[str, float | None]:
        async def scan(r: Client) -> dict[str, float | None]:
            keys = [key async for key in r.scan_iter(match=pattern, count=1000)]
            async with r.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.pttl(key)
                ttls = await pipe.execute()
            return {
                key.decode(): (None if ttl < 0 else ttl / 1000)
                for key, ttl in zip(keys, ttls, strict=True)
                if ttl != -2
            }

        return await self._call(scan, seconds=LONG_OP_TIMEOUT)


def _exhausted(exc: BaseException) -> bool:
    """The pool had no connection to give within its wait (not a failure of Redis)."""
    return isinstance(exc, MaxConnectionsError) or (
        isinstance(exc, RedisConnectionError) and str(exc) == "No connection available."
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ms(seconds: float) -> int:
    if seconds <= 0:
        raise ValueError(f"ttl must be positive, got {seconds}")
    return max(1, round(seconds * 1000))


def _offer(sender: MemoryObjectSendStream[JsonObject], item: JsonObject, channel: str) -> None:
    try:
        sender.send_nowait(item)
    except anyio.WouldBlock:
        logger.warning("subscriber of %s is %d behind; dropped", channel, SUBSCRIBER_BUFFER)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
