"""The SSE benchmark's client process: `python -m bench.sse_clients SPEC`.

A process of its own (asyncio on uvloop, aiohttp), so that the clients share neither an
event loop nor a core's timing with the benchmark that appends the events. It reads a
`ClientSpec` (JSON) from SPEC, opens `per_session` `GET /events/{id}` connections for each
session, `open_at_once` at a time (a connection counts until its `snapshot` frame), and
writes `ready_path` once every connection has had its snapshot or failed. With `events`
above 0 it then waits for `go_path` (the appender has started), takes the time each
`bench` frame arrives (`time.time_ns()` as its line is read, less the `sent` the appender
put in the event: the same machine's wall clock) until every connection has had `events`
of them, and writes `result_path`; with 0 it writes the result at once (the burst: open
every connection, count, close). Every file is written whole (renamed into place), so the
benchmark that polls for it never reads half of one. Every wait is bounded by the spec.

This module imports only the standard library until it runs (aiohttp and uvloop then), so
that the benchmark can import its protocol (`ClientSpec`, `write_json`, `read_json`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

POLL: Final = 0.02
ERRORS_KEPT: Final = 20


@dataclass(frozen=True, slots=True)
class ClientSpec:
    base: str
    headers: dict[str, str]
    sessions: list[str]
    per_session: int
    events: int
    """`bench` frames each connection waits for; 0: open every connection, report, close."""
    open_at_once: int
    """Connections opening at a time: a connection counts until it has its snapshot."""
    open_timeout: float
    events_timeout: float
    """After the appender starts, for every connection to have had its `events`."""
    ready_path: str
    result_path: str
    go_path: str
    """Appears when the appender starts."""


def write_json(path: str | Path, value: Any) -> None:
    partial = f"{path}.partial"
    Path(partial).write_text(json.dumps(value))
    os.replace(partial, path)  # whoever polls for `path` never reads half of it


def read_json(path: str | Path) -> Any:
    """What `path` holds as JSON, or None while it does not exist."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


ENDED: Final = "the stream ended"
ENDED_RETRY: Final = "the stream ended with a retry: hint"


def _reason(exc: Exception) -> str:
    """A failure's kind, for counting: `HTTP 503`, how the stream ended, or the type."""
    text = str(exc)
    if text.startswith("HTTP "):
        return text.split(" {", 1)[0]
    return text if text in (ENDED, ENDED_RETRY) else type(exc).__name__


async def follow_all(spec: ClientSpec) -> None:
    import aiohttp

    streams = len(spec.sessions) * spec.per_session
    # Connections that had their snapshot, had every event, never opened, and ended
    # (or failed) after they opened without every event.
    opened = finished = failed = broken = gaps = other = 0
    all_open = asyncio.Event()
    all_done = asyncio.Event()
    gate = asyncio.Semaphore(spec.open_at_once)
    latencies: list[int] = []
    errors: list[str] = []
    reasons: dict[str, int] = {}

    def check() -> None:
        if opened + failed == streams:
            all_open.set()
        if finished + failed + broken == streams:
            all_done.set()

    async def follow(session_id: str) -> None:
        nonlocal opened, finished, failed, broken, gaps, other
        got = 0
        first = True
        hinted = False
        url = f"{spec.base}/events/{session_id}"
        await gate.acquire()
        try:
            async with http.get(url, headers=spec.headers) as response:
                if response.status != 200:
                    body = (await response.read())[:200].decode(errors="replace")
                    raise RuntimeError(f"HTTP {response.status} {body}")
                async for line in response.content:
                    now = time.time_ns()
                    if not line.startswith(b"data:"):
                        hinted = hinted or line.startswith(b"retry:")
                        continue
                    if b'"type":"bench"' in line:
                        latencies.append(now - json.loads(line[5:])["sent"])
                        got += 1
                        if got == spec.events:
                            finished += 1
                            check()
                    elif first:
                        first = False
                        gate.release()
                        if json.loads(line[5:]).get("type") != "snapshot":
                            raise RuntimeError("the first frame is no snapshot")
                        opened += 1
                        check()
                    elif b'"type":"gap"' in line:
                        gaps += 1
                    else:
                        other += 1
                raise RuntimeError(ENDED_RETRY if hinted else ENDED)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            errors.append(f"{session_id}: {type(exc).__name__}: {exc}")
            reason = _reason(exc)
            reasons[reason] = reasons.get(reason, 0) + 1
            if first:
                failed += 1
            elif got < spec.events:
                broken += 1
            check()
        finally:
            if first:
                gate.release()

    cpu_start = time.process_time()
    timeout = aiohttp.ClientTimeout(total=None, connect=spec.open_timeout, sock_read=None)
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, read_bufsize=1 << 18
    ) as http:
        started = time.monotonic()
        tasks = [
            asyncio.create_task(follow(session_id))
            for session_id in spec.sessions
            for _ in range(spec.per_session)
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_open.wait(), spec.open_timeout)
        ready = {
            "opened": opened,
            "failed": failed,
            "open_s": time.monotonic() - started,
            "reasons": dict(reasons),
            "errors": errors[:ERRORS_KEPT],
        }
        write_json(spec.ready_path, ready)
        cpu_open = time.process_time()
        cpu_go = cpu_events = cpu_open
        if spec.events:
            # The appender starts once it has read `ready`; the events' bound starts then.
            for _ in range(int(spec.open_timeout / POLL)):
                if read_json(spec.go_path) is not None:
                    break
                await asyncio.sleep(POLL)
            cpu_go = time.process_time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_done.wait(), spec.events_timeout)
            cpu_events = time.process_time()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    write_json(
        spec.result_path,
        {
            **ready,
            "finished": finished,
            "broken": broken,
            "latencies_ns": latencies,
            "gaps": gaps,
            "other_frames": other,
            "reasons": dict(reasons),
            "errors": errors[:ERRORS_KEPT],
            "cpu_open_s": cpu_open - cpu_start,
            "cpu_events_s": cpu_events - cpu_go,
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    import uvloop

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.sse_clients SPEC", file=sys.stderr)
        return 2
    spec = ClientSpec(**json.loads(Path(args[0]).read_text()))
    uvloop.run(follow_all(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
