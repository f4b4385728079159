"""Following files on disk (by watchfiles), stoppable at once.

watchfiles waits for changes in a worker thread that a cancellation cannot interrupt: it
is noticed only when the thread returns, after `rust_timeout` (5 s by default). Every
watcher of the gateway goes through here with a short timeout, so that shutting down (or
a test ending) takes a fraction of a second, at the price of a thread wake-up per period.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
from watchfiles import Change, awatch

WAKE_MS = 250
"""How often the watching thread returns, and so how late a cancellation can be."""
STEP_MS = 100
"""How often the watching thread looks for news (watchfiles' default, 50, costs an idle
gateway 1% of a core with its three watchers)."""


async def changes(
    directory: Path,
    relevant: Callable[[Change, str], bool],
    debounce_ms: int,
    stop: anyio.Event | None = None,
) -> AsyncIterator[set[tuple[Change, str]]]:
    """Batches of relevant changes under `directory`, until cancelled or `stop` is set."""
    async for batch in awatch(
        directory,
        watch_filter=relevant,
        debounce=debounce_ms,
        stop_event=stop,
        rust_timeout=WAKE_MS,
        step=STEP_MS,
    ):
        yield batch


async def file_changes(path: Path, debounce_ms: int) -> AsyncIterator[None]:
    """Once per batch of changes to the one file `path` (watching its folder, so that an
    editor's replace-by-rename is seen too)."""
    target = str(path)
    async for _ in changes(path.parent, lambda _change, changed: changed == target, debounce_ms):
        yield None
