"""The tag store: the current TagSet, swapped atomically on reload, watched on disk.

Readers call `store.current` and get one complete, immutable version; a reload builds the
next version off to the side and replaces the reference in one assignment, so no reader
ever sees half of a change. An invalid change is logged and rejected, and the last good
version stays in force.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from ..errors import ConfigError, ConfigIssue
from ..watching import changes
from .loader import SUFFIXES, TagLoader, TagSet

logger = logging.getLogger("gateway.tags")

Subscriber = Callable[[TagSet, TagSet], None]
"""Called with (old, new) after a new version is in force. Must not block: a subscriber
with async work to do hands it to its own task (e.g. through a memory stream)."""


@dataclass(frozen=True, slots=True)
class ReloadResult:
    changed: bool
    version: int
    error: ConfigError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class TagStore:
    def __init__(self, directory: Path, display_root: Path | None = None) -> None:
        self.directory = directory
        self._loader = TagLoader(directory, display_root)
        self._current: TagSet | None = None
        self._subscribers: list[Subscriber] = []
        self._loading = threading.Lock()
        self.last_error: ConfigError | None = None
        self.loaded_at: float = 0.0

    @classmethod
    def open(cls, directory: Path, display_root: Path | None = None) -> TagStore:
        """Load the directory or raise ConfigError: the gateway does not start on a bad
        config."""
        store = cls(directory, display_root)
        tagset = store._loader.load()
        store._current = dataclasses.replace(tagset, version=1)
        store.loaded_at = time.time()
        return store

    @property
    def current(self) -> TagSet:
        if self._current is None:
            raise RuntimeError("TagStore used before it was opened")
        return self._current

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Register `subscriber`; returns a function that unregisters it."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def reload(self) -> ReloadResult:
        """Load the directory again; swap it in if it is valid and different."""
        return self._swap(self._load())

    async def areload(self) -> ReloadResult:
        """`reload` with the loading in a worker thread: a large config takes a second or
        two to parse, which must not stall the event loop. Subscribers still run here."""
        return self._swap(await anyio.to_thread.run_sync(self._load))

    def _load(self) -> TagSet | ConfigError:
        with self._loading:  # the loader's parse cache is not for two threads at once
            try:
                return self._loader.load()
            except ConfigError as exc:
                return exc
            except Exception as exc:
                # No file may stop the watcher. The loader bounds what a file may cost; this
                # is for what it did not foresee (a MemoryError, a bug): the change is
                # rejected like any invalid one.
                logger.exception("loading the tags directory failed")
                issue = ConfigIssue(str(self.directory), f"cannot be loaded: {exc!r}")
                return ConfigError([issue])

    def _swap(self, loaded: TagSet | ConfigError) -> ReloadResult:
        old = self.current
        if isinstance(loaded, ConfigError):
            self.last_error = loaded
            logger.error(
                "tag config change rejected; version %d stays in force. %s", old.version, loaded
            )
            return ReloadResult(False, old.version, loaded)
        self.last_error = None
        if loaded.digest == old.digest:
            return ReloadResult(False, old.version)
        new = dataclasses.replace(loaded, version=old.version + 1)
        self._current = new
        self.loaded_at = time.time()
        logger.info(
            "tag config version %d in force (%d tags, %d orgs)",
            new.version,
            new.tag_count,
            len(new.orgs),
        )
        for subscriber in list(self._subscribers):
            try:
                subscriber(old, new)
            except Exception:
                logger.exception("tag config subscriber %r failed", subscriber)
        return ReloadResult(True, new.version)

    async def watch(self, debounce_ms: int = 200, stop: anyio.Event | None = None) -> None:
        """Reload whenever a tag file changes, until `stop` is set or the task is cancelled."""

        def relevant(_change: object, path: str) -> bool:
            # "..data" is how Kubernetes swaps a mounted ConfigMap: one symlink flip.
            return path.endswith(SUFFIXES) or "..data" in path

        async for _changes in changes(self.directory, relevant, debounce_ms, stop):
            await self.areload()
