"""`gateway sessions list`, `gateway sessions show ID` (agent sessions, from the state
store gateway.yaml names) and `gateway run "message"` (one session, run in this process
as a user, with its progress on the terminal and its questions asked there)."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import TYPE_CHECKING, Any, Final, TextIO

import anyio

from ..engine.caller import Reporter
from ..engine.loop import SessionResult
from ..engine.states import SessionState
from ..errors import SessionError
from ..settings import GatewayConfig
from ..state.base import START, Stream
from .common import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_STARTUP,
    open_config,
    principal,
    print_json,
    shared_store,
    shown,
    store_ready,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.status import Status

    from ..engine.loop import Engine
    from ..tags.context import ResolvedContext

EXIT_NOT_DONE: Final = 1
"""`gateway run`: the session did not complete (failed, or waits for an answer)."""
MAX_ANSWERS: Final = 20
"""Questions and approvals a `gateway run` session may put to its user."""


def list_(args: argparse.Namespace) -> int:
    config, _ = open_config(args)
    return anyio.run(_list, config, args)


def show(args: argparse.Namespace) -> int:
    config, _ = open_config(args)
    return anyio.run(_show, config, args)


async def _list(config: GatewayConfig, args: argparse.Namespace) -> int:
    async with shared_store(config) as store:
        if not await store_ready(store):
            return EXIT_STARTUP
        rows = []
        for session_id in await store.session_ids():
            snapshot = await store.get_session_state(session_id)
            if snapshot is None:  # expired since the scan
                continue
            if args.state and snapshot.get("state") != args.state:
                continue
            if args.user and snapshot.get("user") != args.user:
                continue
            if args.org and snapshot.get("org") != args.org:
                continue
            rows.append(_summary(snapshot))
    rows.sort(key=lambda row: row["created"], reverse=True)
    if args.json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        print("no sessions")
        return EXIT_OK
    print(f"{'SESSION':<20} {'STATE':<15} {'USER':<24} {'CREATED':<20} TURNS CALLS  OUTCOME")
    for row in rows:
        who = f"{row['user']}@{row['org']}"
        outcome = shown((row["outcome"] or "").replace("\n", " "))
        print(
            f"{row['id']:<20} {row['state']:<15} {who:<24} {_when(row['created']):<20} "
            f"{row['spent'].get('turns', 0):>5} {row['spent'].get('tool_calls', 0):>5}  "
            f"{outcome[:60]}"
        )
    return EXIT_OK


async def _show(config: GatewayConfig, args: argparse.Namespace) -> int:
    async with shared_store(config) as store:
        if not await store_ready(store):
            return EXIT_STARTUP
        snapshot = await store.get_session_state(args.session_id)
        if snapshot is None:
            print(f"gateway: no session {args.session_id!r} (it may have expired)", file=sys.stderr)
            return EXIT_NOT_FOUND
        most = 1000 if args.events is None else args.events
        batch = await store.read(args.session_id, Stream.EVENTS, START, most)
    events = [{"id": event.id, **event.data} for event in batch.events]
    if args.json:
        print_json({"session": _summary(snapshot), "events": events})
        return EXIT_OK
    row = _summary(snapshot)
    print(f"session  {row['id']}")
    print(
        f"state    {row['state']}" + (f" (waiting for {row['waiting']})" if row["waiting"] else "")
    )
    print(
        f"user     {row['user']}@{row['org']}"
        + (f", intent {shown(row['intent'])}" if row["intent"] else "")
    )
    print(f"created  {_when(row['created'])}")
    print(f"message  {shown(row['message'])}")
    if row["outcome"]:
        print(f"outcome  {shown(row['outcome'])}")
    spent = ", ".join(f"{name} {value}" for name, value in row["spent"].items() if value)
    print(f"spent    {spent or 'nothing'}")
    for call in row["calls"]:
        print(f"call     {call['tool']}: {call['decision']}{'' if call['ok'] else ' (not ok)'}")
    print("events")
    for event in events:
        details = {k: v for k, v in event.items() if k not in ("id", "type", "data")}
        print(f"  {event['id']:<18} {event['type']:<16} {_compact(details)}")
    return EXIT_OK


def _summary(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A snapshot without its transcript (the model's side of it)."""
    keys = ("id", "state", "waiting", "user", "org", "intent", "message", "outcome", "created")
    return {
        **{key: snapshot.get(key) for key in keys},
        "spent": snapshot.get("spent", {}),
        "calls": snapshot.get("calls", []),
    }


def _when(created: Any) -> str:
    if not isinstance(created, int | float):
        return "?"
    moment = datetime.datetime.fromtimestamp(created, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _compact(details: dict[str, Any]) -> str:
    text = " ".join(f"{key}={value!r}" for key, value in details.items())
    return text if len(text) <= 160 else f"{text[:157]}..."


# --- gateway run ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from ..runtime import Runtime

    config, manager = open_config(args)
    runtime = Runtime.open(config, manager)
    return anyio.run(_run, runtime, args)


async def _run(runtime: Any, args: argparse.Namespace) -> int:
    display = Display(sys.stderr)
    async with runtime.running(recover=False):
        context = runtime.tags.resolve(principal(args), args.intent)
        engine: Engine = runtime.engine
        try:
            inputs = _inputs(args)
            session = await engine.start(context, args.message, flow=args.flow, inputs=inputs)
        except (SessionError, ValueError) as exc:
            print(f"gateway run: {exc}", file=sys.stderr)
            return EXIT_NOT_DONE
        display.line(f"session {session.id}")
        reporter = Reporter(display.progress, runtime.state, session.id, START)
        failure: SessionError | None = None
        with display:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(reporter.follow)
                try:  # in the group: its errors would come out of it as an ExceptionGroup
                    result = await engine.run(session)
                    result = await _answered(engine, context, result, display)
                except SessionError as exc:
                    failure = exc
                tasks.cancel_scope.cancel()
            await reporter.catch_up()
    if failure is not None:
        print(f"gateway run: {failure}", file=sys.stderr)
        return EXIT_NOT_DONE
    print(result.text or "")
    if result.state is SessionState.INPUT_REQUIRED:
        display.line(
            f"session {result.session_id} waits for {result.waiting}; answer it through "
            "run_session with its session_id"
        )
    return EXIT_OK if result.state is SessionState.COMPLETED else EXIT_NOT_DONE


def _inputs(args: argparse.Namespace) -> dict[str, Any] | None:
    """--inputs as a JSON object; ValueError naming what is wrong."""
    if args.flow is None:
        if not args.message:
            raise ValueError("say what the session is to do (a message), or name a --flow")
        return None
    try:
        value = json.loads(args.inputs)
    except ValueError as exc:
        raise ValueError(f"--inputs is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("--inputs must be a JSON object ({...})")
    return value


async def _answered(
    engine: Engine, context: ResolvedContext, result: SessionResult, display: Display
) -> SessionResult:
    """Ask the user what the session waits for, on the terminal (or read the answers from
    stdin, one a line, when it is not one), until it no longer waits or stdin ends."""
    for _ in range(MAX_ANSWERS):
        if result.state is not SessionState.INPUT_REQUIRED:
            break
        approval = result.waiting == "approval"
        hint = " [approve/reject, and why]" if approval else ""
        said = await display.ask(f"{result.text}{hint}")
        if said is None:
            break
        if approval:
            verdict, _, why = said.strip().partition(" ")
            if verdict.lower() in ("approve", "yes", "y"):
                result = await engine.respond(result, context, "approve", why)
            elif verdict.lower() in ("reject", "no", "n"):
                result = await engine.respond(result, context, "reject", why)
            else:
                display.line("say approve or reject")
        else:
            result = await engine.respond(result, context, "answer", said)
    return result


class Display:
    """A session's progress: on a terminal, a live status line (rich's) above which each
    step is printed; otherwise plain lines."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.live = out.isatty()
        self._console: Console | None = None
        self._status: Status | None = None
        if self.live:
            from rich.console import Console  # only a terminal needs it

            self._console = Console(file=out)

    def __enter__(self) -> Display:
        if self._console is not None:
            self._status = self._console.status("starting")
            self._status.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def line(self, text: str) -> None:
        if self._console is not None:
            self._console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.out, flush=True)

    async def progress(self, _done: float, _total: float | None, message: str | None) -> None:
        if self._status is not None:
            self._status.update(message or "")
        self.line(f"· {message}")

    async def ask(self, question: str) -> str | None:
        """The user's answer to `question`, a line of stdin, or None when it has ended."""
        if self._status is not None:
            self._status.stop()
        self.line(f"? {question}")
        try:
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
        finally:
            if self._status is not None:
                self._status.start()
        return line.rstrip("\n") if line else None
