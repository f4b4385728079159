"""The composition root: the gateway's parts, built once from its configuration and owned
by one object that every door uses (the HTTP app, `gateway stdio`, the engine's
run_session, and the session API to come). Nothing here knows a door; the doors know the runtime.

    Runtime
    ├── tags      TagManager over the watched tag directory (the one source of truth)
    ├── state     the state store (Redis or in-memory)
    ├── pool      every upstream, supervised, and the catalog over them; the gateway's
    │             own tools (own_tools.py) are one more, in process, under `gateway__`
    ├── audit     the audit log
    ├── service   the call service (gateway/calls): the one road to an upstream's tool,
    │             with the audit log as an outcome hook
    ├── views     what each caller may see, per principal
    └── engine    agent sessions (gateway/engine), served as the own tool run_session

`running()` starts what must run for any door to serve: the state store, the tag watcher,
the pool, and (once the pool has settled) the engine's sweep for sessions to resume. It
enters once every upstream has made its first attempt, and refuses to start (CannotStart)
when two upstreams offer the same name or URI: an upstream that is down does not stop the
gateway.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskGroup

from .audit import AuditLog
from .calls import ToolService
from .engine.loop import Engine
from .engine.planners.configured import configured_planner
from .engine.recovery import Recovery
from .engine.settings import EngineSettings
from .engine.tool import run_session_tool
from .errors import CannotStart, ConfigError, ConfigIssue
from .flows.tools import FlowTools
from .front.views import Views, build_view
from .own_tools import TOOLS as OWN_TOOLS
from .own_tools import own_upstream
from .settings import GatewayConfig
from .state import StateStore, open_store
from .tags import TagManager
from .upstreams.config import OWN_UPSTREAM, InProcessUpstream
from .upstreams.definitions import DefinitionLedger
from .upstreams.pool import Pool

logger = logging.getLogger("gateway")

ANSWERING_SECONDS = 3600.0
"""How long a run_session call may wait, in all, for its caller to answer elicitations."""


class Runtime:
    def __init__(
        self,
        config: GatewayConfig,
        tags: TagManager,
        state: StateStore,
        pool: Pool,
        audit: AuditLog | None = None,
    ) -> None:
        """The parts as given (tests build them themselves); `open` builds them from
        `config`. The audit log defaults to the config's file."""
        self.config = config
        self.tags = tags
        self.state = state
        self.pool = pool
        self.audit = audit if audit is not None else AuditLog(config.audit_path)
        self.service = ToolService(pool, [self.audit.record_call])
        self.views = Views(tags.resolve, lambda: pool.catalog)
        self._recovery: anyio.CancelScope | None = None
        self._stopping = False
        own = pool.connections.get(OWN_UPSTREAM)
        if own is not None:  # its flow tools follow the tags
            tags.store.subscribe(lambda _old, _new: own.relist())
        engine = config.settings.engine
        self.engine = Engine(
            self.service,
            state,
            lambda context: build_view(context, pool.catalog).tools,
            configured_planner(engine, config.path),
            engine.budgets,
            engine.confidence,
            engine.after_taint,
            engine.lease,
            engine.nested_depth,
            engine.taint_definitions,
        )

    @classmethod
    def open(cls, config: GatewayConfig, tags: TagManager) -> Runtime:
        """The parts `config` describes, not yet running. Raises ConfigError for a state
        URL it cannot use."""
        settings = config.settings
        try:
            state = open_store(config.state_url, config.state_ttls, settings.state.stream_max_len)
        except ValueError as exc:
            raise ConfigError([ConfigIssue(str(config.path), str(exc), field="state.url")]) from exc
        audit = AuditLog(config.audit_path)
        ledger = DefinitionLedger(config.definitions_path, audit)
        built: list[Runtime] = []
        pool = Pool(
            settings.upstreams,
            ledger,
            direct_calls=settings.server.direct_calls,
            own=own_tools(tags, lambda: built[0], settings.engine),
        )
        built.append(cls(config, tags, state, pool, audit))
        return built[0]

    async def _recover(self) -> None:
        with anyio.CancelScope() as self._recovery:
            if not self._stopping:
                self.engine.sweeping = True
                try:
                    await Recovery(self.engine, self.tags.resolve).run()
                finally:
                    self.engine.sweeping = False

    def stop_sessions(self) -> None:
        """The gateway is shutting down: no more sessions are resumed here, and those its
        shutdown cancels are left to resume elsewhere or after a restart (Engine.stop)."""
        self._stopping = True
        if self._recovery is not None:
            self._recovery.cancel()
        self.engine.stop()

    def on_change(self, listener: Callable[..., None]) -> Callable[[], None]:
        """Call `listener` whenever what a caller may see can have changed: a tag reload
        or a new catalog. Returns what stops it."""
        stops = (self.pool.subscribe(listener), self.tags.store.subscribe(listener))

        def stop() -> None:
            for each in stops:
                each()

        return stop

    @asynccontextmanager
    async def running(self, recover: bool = True) -> AsyncIterator[TaskGroup]:
        """Everything the doors need, running (see the module docstring); yields a task
        group for the doors' own tasks, cancelled on the way out. `recover`: also resume
        sessions whose engine stopped (as gateway.yaml says; `gateway run`, one session in
        a short-lived process, never does)."""
        refused: CannotStart | None = None
        # The store never fails to start: without its server it reports not ready and
        # keeps connecting, while tag listing and checks go on from the config files.
        async with self.state, anyio.create_task_group() as tasks:
            if self.config.settings.tags.watch:
                tasks.start_soon(self.tags.store.watch)
            tasks.start_soon(self.pool.run)
            try:
                await self.pool.settled()
                clashes = self.pool.catalog.clashes
                if clashes:
                    path = str(self.config.path)
                    refused = CannotStart(
                        ConfigIssue(path, clash, field="upstreams") for clash in clashes
                    )
                else:
                    for name, status in self.pool.statuses().items():
                        if status.error:
                            logger.warning(
                                "upstream %s is %s: %s", name, status.reported, status.error
                            )
                    tasks.start_soon(self.engine.watch_cancels)
                    if recover and self.config.settings.engine.recover:
                        # After the pool settled: a resumed session's calls need its tools.
                        tasks.start_soon(self._recover)
                    yield tasks
            finally:
                tasks.cancel_scope.cancel()
                self.audit.close()
        if refused is not None:
            raise refused  # out here, not wrapped in the task group's ExceptionGroup


def own_tools(
    tags: TagManager, runtime: Callable[[], Runtime], engine: EngineSettings | None = None
) -> InProcessUpstream:
    """The gateway's own tools for the pool: ping, and the engine's run_session on
    `runtime()`'s engine (the runtime is built after its pool, so it is found late), as
    gateway.yaml's `engine` section has it."""
    sessions = run_session_tool(lambda: runtime().engine, tags.resolve, engine)
    flows = FlowTools(lambda: tags.tagset, tags.resolve, lambda: runtime().engine)
    # A run_session call lasts as long as its session may (its wall clock, a resume's
    # lease), and the time its caller takes to answer elicited questions: the in-process
    # upstream's cap must not cut it short, which would cancel the session.
    settings = engine or EngineSettings()
    longest = settings.budgets.wall_seconds + 2 * settings.lease + ANSWERING_SECONDS
    own = {**OWN_TOOLS, sessions.definition.name: sessions}
    return own_upstream(own, flows, call_timeout=longest)
