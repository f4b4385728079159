"""`gateway run --url`, `gateway sessions show ID --url` and `gateway sessions list --url`:
the same commands against a running gateway, through its session API (REST, rest.py), as
the caller its API key names (`--api-key`, or $GATEWAY_API_KEY; none: a gateway that lets
loopback callers in without one).

`run` starts the session (POST /sessions), follows it by polling GET /sessions/{id} (every
0.2 s, growing to 1 s while nothing changes), and puts what it waits for to the user:
a question is answered with a line of standard input (POST .../interact), an approval
with approve or reject, and why (POST .../approvals/{id}). The progress goes to stderr,
live on a terminal (the local run's display), one plain line per change otherwise; the
reply alone goes to stdout. Ctrl-C cancels the session (POST .../cancel) before exiting.

Nothing waits forever: each request has its timeouts (a refused connection is tried
again twice, a poll that fails in transit up to five times in a row), and the whole wait
is bounded by `--timeout` (default: the session's wall_seconds budget and a minute), time
spent at a prompt excepted, as the budget excepts it. A session that outlives it is
cancelled.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any, Final

from .common import EXIT_NOT_FOUND, EXIT_OK, UsageError, print_json, shown
from .rest import CANCEL_TIMEOUT, EXIT_API, ApiFailure, Client, api_key, base_url, connect, refused
from .sessions import EXIT_NOT_DONE, MAX_ANSWERS, Display, _inputs, _when

EXIT_TIMEOUT: Final = 5
"""`run`: the session did not end within --timeout (it was cancelled)."""
EXIT_INTERRUPTED: Final = 130
"""`run`: Ctrl-C (the session was cancelled), as a shell reports SIGINT."""

FIRST_POLL: Final = 0.2
LAST_POLL: Final = 1.0
"""Seconds between two polls: FIRST_POLL after a change, growing to LAST_POLL."""
MARGIN: Final = 60.0
"""Seconds waited beyond the session's wall_seconds budget, by default."""
DEFAULT_WAIT: Final = 900.0 + MARGIN
"""Until the first view says the session's budget."""
POLL_FAILURES: Final = 5
"""Polls in a row that may fail in transit (or with 429, 502, 503, 504)."""
SEND_TRIES: Final = 25
"""Attempts at an answer the session is not ready for yet (FIRST_POLL apart)."""
FINAL: Final = frozenset({"completed", "failed", "canceled", "rejected"})
PAGE: Final = 100
PAGES: Final = 10
"""`sessions list --url`: pages read at most (1000 sessions)."""


def local_only(args: argparse.Namespace, *names: str) -> None:
    """UsageError naming the options given that only a local command takes."""
    given = [f"--{name.replace('_', '-')}" for name in names if getattr(args, name, None)]
    if given:
        raise UsageError(
            f"{', '.join(given)}: not with --url (the gateway's API key names the caller, "
            "and the gateway has its own configuration)"
        )


# --- gateway run --url ---------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    local_only(args, "config", "user", "org", "roles")
    base = base_url(args.url)
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError("--timeout must be a number of seconds above 0")
    try:
        inputs = _inputs(args)
    except ValueError as exc:
        print(f"gateway run: {exc}", file=sys.stderr)
        return EXIT_NOT_DONE
    body: dict[str, Any] = {}
    if args.message:
        body["message"] = args.message
    if args.intent:
        body["intent"] = args.intent
    if args.flow is not None:
        body["flow"] = args.flow
        body["inputs"] = inputs
    client = Client(base, api_key(args))
    try:
        try:
            created = client.call("POST", "/sessions", body)
        except KeyboardInterrupt:
            print(
                "gateway run: interrupted before the gateway said the session's id; it may "
                "have started (gateway sessions list --url ...)",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        except ApiFailure as exc:
            return refused("run", exc)
        session_id = str(created.get("id", ""))
        if not session_id:
            print("gateway run: the gateway's answer has no session id", file=sys.stderr)
            return EXIT_API
        follower = Follower(client, Board(sys.stderr), session_id, args.timeout)
        return follower.follow()
    finally:
        client.close()


class Board(Display):
    """The local run's display, with the live line showing how the session stands, and
    prompts read from standard input."""

    def update(self, text: str) -> None:
        if self._status is not None:
            self._status.update(text)

    def stop(self) -> None:
        """The live line gone for good (before the last words on stderr)."""
        if self._status is not None:
            self._status.stop()
            self._status = None

    def read(self, prompt: str) -> str | None:
        """A line of stdin (None when it has ended); `prompt` before it on a terminal."""
        if self._status is not None:
            self._status.stop()
        try:
            if self._console is not None:
                from rich.text import Text  # only a terminal needs it

                try:
                    return self._console.input(Text(prompt))  # (a str is highlighted)
                except EOFError:
                    return None
            line = sys.stdin.readline()
            return line.rstrip("\n") if line else None
        finally:
            if self._status is not None:
                self._status.start()


class Follower:
    """Follows one session to its end, answering what it asks."""

    def __init__(
        self, client: Client, board: Board, session_id: str, timeout: float | None
    ) -> None:
        self.client, self.board, self.id = client, board, session_id
        self.path = f"/sessions/{session_id}"
        self.timeout = timeout
        self.envelopes = 0
        self.calls: dict[str, tuple[str, bool]] = {}
        self.standing: tuple[str, str | None] | None = None
        self.limit = 0.0
        """The wait it had, once it timed out."""
        self.paused = 0.0
        """Seconds spent at a prompt: the session's clock stops while it waits too."""

    def follow(self) -> int:
        self.board.line(f"session {self.id}")
        try:
            with self.board:
                code, view = self._follow()
        except KeyboardInterrupt:
            self._cancel("interrupted")
            return EXIT_INTERRUPTED
        except ApiFailure as exc:
            return refused("run", exc)
        except KeyError as exc:
            self.board.stop()
            what = f"the gateway's answer has no {exc}: is --url a gateway's?"
            print(f"gateway run: {what}", file=sys.stderr)
            return EXIT_API
        return self._end(code, view)

    def _follow(self) -> tuple[int, dict[str, Any]]:
        started = time.monotonic()
        limit = self.timeout
        interval = FIRST_POLL
        answered: str | None = None  # the last_event of what was last answered
        answers = 0
        failures = 0
        while True:
            try:
                view = self.client.call("GET", self.path)
            except ApiFailure as exc:
                failures += 1
                if not exc.transient or failures > POLL_FAILURES:
                    raise
                self.board.line(f"· {exc}; trying again")
                time.sleep(interval)
                interval = min(interval * 2, LAST_POLL)
                continue
            failures = 0
            if limit is None:
                wall = view.get("budgets", {}).get("wall_seconds")
                limit = float(wall) + MARGIN if isinstance(wall, int | float) else DEFAULT_WAIT
            changed = self._tell(view)
            status = view["status"]
            if status in FINAL:
                return EXIT_OK if status == "completed" else EXIT_NOT_DONE, view
            asking = status == "input_required" and view.get("waiting") is not None
            if asking and view.get("last_event") != answered:
                if answers == MAX_ANSWERS or not self._answer(view):
                    return EXIT_NOT_DONE, view
                answered, answers, interval = view.get("last_event"), answers + 1, FIRST_POLL
                continue
            left = limit - (time.monotonic() - started - self.paused)
            if left <= 0:
                self.limit = limit
                return EXIT_TIMEOUT, view
            interval = FIRST_POLL if changed else min(interval * 1.5, LAST_POLL)
            time.sleep(min(interval, left))

    def _tell(self, view: dict[str, Any]) -> bool:
        """Say what changed since the last view; whether anything did."""
        self.board.update(f"{view['status']} · {spending(view)}")
        changed = False
        envelopes = view.get("envelopes", [])
        for seen in envelopes[self.envelopes :]:
            self.board.line(f"· the model answered: {seen['kind']}{_confidence(seen)}")
            changed = True
        self.envelopes = max(self.envelopes, len(envelopes))
        for call in view.get("calls", []):
            now = (str(call["decision"]), bool(call["ok"]))
            if self.calls.get(call["key"]) != now:
                self.calls[call["key"]] = now
                self.board.line(f"· call {call['tool']}: {_call(call)}")
                changed = True
        standing = (view["status"], view.get("waiting"))
        if standing != self.standing:
            self.standing = standing
            waiting = f" (waiting for {standing[1]})" if standing[1] else ""
            self.board.line(f"· session {standing[0]}{waiting}")
            changed = True
        return changed

    def _answer(self, view: dict[str, Any]) -> bool:
        """Put the session's question or approval to the user and send the answer;
        False when stdin has ended."""
        asked = time.monotonic()
        try:
            if view["waiting"] == "approval" and view.get("approval"):
                return self._decide(view)
            return self._reply(view)
        finally:
            self.paused += time.monotonic() - asked

    def _reply(self, view: dict[str, Any]) -> bool:
        question = _text(view.get("question") or "")
        if view["waiting"] == "confidence":
            question += f" (the model is not sure{_last_confidence(view)})"
        self.board.line(f"? {question}")
        for _ in range(MAX_ANSWERS):
            said = self.board.read("> ")
            if said is None:
                return False
            if said.strip():
                body = {"message": said}
                if view.get("last_event"):  # refused if it was answered elsewhere since
                    body["question"] = view["last_event"]
                self._send(f"{self.path}/interact", body, view.get("last_event"))
                return True
            self.board.line("an answer cannot be empty")
        return False

    def _decide(self, view: dict[str, Any]) -> bool:
        approval = view["approval"]
        self.board.line(f"? {_text(view.get('question') or 'approve these calls?')}")
        for index, call in enumerate(approval.get("calls", []), 1):
            arguments = json.dumps(call.get("arguments", {}), ensure_ascii=False)
            self.board.line(f"  {index}. {shown(call.get('tool'))} {shown(arguments)}")
            if call.get("why"):
                self.board.line(f"     why: {shown(call['why'])}")
        for _ in range(MAX_ANSWERS):
            said = self.board.read("approve? [y/n] ")
            if said is None:
                return False
            verdict, _, why = said.strip().partition(" ")
            if verdict.lower() in ("y", "yes", "approve"):
                decision = {"decision": "approve"}
            elif verdict.lower() in ("n", "no", "reject"):
                if not why.strip():
                    why = self.board.read("why (told to the model)? ") or ""
                decision = {"decision": "reject", "message": why.strip()}
            else:
                self.board.line("say approve (y) or reject (n)")
                continue
            self._send(f"{self.path}/approvals/{approval['id']}", decision, view.get("last_event"))
            return True
        return False

    def _send(self, path: str, body: dict[str, Any], asked: str | None) -> None:
        """POST the user's word on what the view whose last event is `asked` showed.

        A 409 not_waiting comes also just after a session asked, while the engine that
        ran it still holds it (it lets go once its snapshot is written): sent again while
        the session still shows that same question (a little while, bounded); anything
        else the 409 says (answered elsewhere, working, ended) is told, and the session
        followed on."""
        for attempt in range(SEND_TRIES):
            try:
                self.client.call("POST", path, body)
                return
            except ApiFailure as exc:
                # 404 for the approval: decided elsewhere (a gone session's next GET says)
                if exc.status != 409 and not (exc.status == 404 and "/approvals/" in path):
                    raise
                refusal = exc
            if refusal.code != "not_waiting" or attempt == SEND_TRIES - 1:
                break
            time.sleep(FIRST_POLL)
            view = self.client.call("GET", self.path)
            if view.get("last_event") != asked or view.get("waiting") is None:
                break
        self.board.line(f"· not taken: {refusal.detail}")

    def _cancel(self, why: str) -> None:
        """Cancel the session (bounded; a second Ctrl-C gives up on it)."""
        self.board.stop()
        try:
            self.client.call("POST", f"{self.path}/cancel", {}, timeout=CANCEL_TIMEOUT)
        except ApiFailure as exc:
            if exc.code == "already_ended":
                print(f"gateway run: {why}; session {self.id} had ended", file=sys.stderr)
            else:
                print(f"gateway run: {why}; cancelling session {self.id}: {exc}", file=sys.stderr)
            return
        except KeyboardInterrupt:
            print(f"gateway run: {why}; session {self.id} left as it is", file=sys.stderr)
            return
        print(f"gateway run: {why}; session {self.id} canceled", file=sys.stderr)

    def _end(self, code: int, view: dict[str, Any]) -> int:
        status = view["status"]
        self.board.line(f"· spent {spending(view)}")
        if status == "completed":
            reply = view.get("reply") or ""
            print(_text(reply) if sys.stdout.isatty() else reply, flush=True)
        elif status in FINAL:
            why = f": {_text(view['error'])}" if view.get("error") else ""
            print(f"gateway run: session {self.id} {status}{why}", file=sys.stderr)
        elif code == EXIT_TIMEOUT:
            print(
                f"gateway run: session {self.id} did not end within {self.limit:g} s (--timeout)",
                file=sys.stderr,
            )
            self._cancel("timed out")
        elif code == EXIT_NOT_DONE:
            print(_text(view.get("question") or ""), flush=True)
            self.board.line(
                f"session {self.id} waits for {view.get('waiting')}; answer it with "
                f"POST {self.path}/interact (or approvals/...), or the gateway's web page"
            )
        return code


# --- gateway sessions show|list --url ------------------------------------------------------


def show(args: argparse.Namespace) -> int:
    local_only(args, "config", "events")
    with connect(args) as client:
        try:
            view = client.call("GET", f"/sessions/{args.session_id}")
        except ApiFailure as exc:
            if exc.status == 404:
                print(f"gateway sessions show: {exc.detail}", file=sys.stderr)
                return EXIT_NOT_FOUND
            return refused("sessions show", exc)
    if args.json:
        print_json(view)
        return EXIT_OK
    waiting = f" (waiting for {view['waiting']})" if view.get("waiting") else ""
    print(f"session  {view['id']}")
    print(f"status   {view['status']}{waiting}")
    if view.get("intent"):
        print(f"intent   {shown(view['intent'])}")
    if view.get("flow"):
        print(f"flow     {shown(view['flow'])}")
    print(f"created  {_when(view.get('created'))}")
    print(f"updated  {_when(view.get('updated'))}")
    print(f"message  {shown(view.get('message', ''))}")
    for field in ("question", "reply", "error"):
        if view.get(field):
            print(f"{field:<8} {shown(view[field])}")
    approval = view.get("approval")
    if approval:
        print(f"approval {approval['id']}")
        for call in approval.get("calls", []):
            arguments = json.dumps(call.get("arguments", {}), ensure_ascii=False)
            why = f" ({shown(call['why'])})" if call.get("why") else ""
            print(f"  hold   {shown(call.get('tool'))} {shown(arguments)}{why}")
    print(f"spent    {spending(view)}")
    for call in view.get("calls", []):
        print(f"call     {shown(call['tool'])}: {_call(call)}")
    for seen in view.get("envelopes", []):
        print(f"envelope {seen['kind']:<8}{_confidence(seen)}")
    return EXIT_OK


def list_(args: argparse.Namespace) -> int:
    local_only(args, "config", "user", "org")
    rows: list[dict[str, Any]] = []
    params = {"limit": str(PAGE)}
    if args.state:
        params["status"] = args.state
    with connect(args) as client:
        for _ in range(PAGES):
            try:
                page = client.call("GET", "/sessions", params=params)
            except ApiFailure as exc:
                return refused("sessions list", exc)
            rows += page.get("sessions", [])
            if not page.get("next"):
                break
            params["cursor"] = str(page["next"])
    if args.json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        print("no sessions")
        return EXIT_OK
    print(f"{'SESSION':<20} {'STATUS':<15} {'CREATED':<20} {'UPDATED':<20} MESSAGE")
    for row in rows:
        message = shown(str(row.get("message", "")).replace("\n", " "))
        print(
            f"{row['id']:<20} {row['status']:<15} {_when(row.get('created')):<20} "
            f"{_when(row.get('updated')):<20} {message[:60]}"
        )
    return EXIT_OK


# --- what the commands say ----------------------------------------------------------------


def spending(view: dict[str, Any]) -> str:
    """What the session spent, of its budgets: turns 2/25, tool calls 1/50, ..."""
    spent: dict[str, Any] = view.get("spent", {})
    budgets: dict[str, Any] = view.get("budgets", {})
    tokens = sum(
        int(spent.get(kind, 0))
        for kind in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    )

    def of(name: str, used: float, show: Callable[[float], str] = lambda v: f"{v:g}") -> str:
        cap = budgets.get(name)
        return show(used) + (f"/{cap:g}" if isinstance(cap, int | float) else "")

    parts = [
        f"turns {of('turns', spent.get('turns', 0))}",
        f"tool calls {of('tool_calls', spent.get('tool_calls', 0))}",
    ]
    if tokens:
        parts.append(f"tokens {of('tokens', tokens)}")
    if spent.get("cost_usd"):
        parts.append(f"cost ${of('cost_usd', spent['cost_usd'], lambda v: f'{v:.4f}')}")
    parts.append(f"{of('wall_seconds', spent.get('seconds', 0), lambda v: f'{v:.1f}')} s")
    if spent.get("violations"):
        parts.append(f"refusals {of('violations', spent['violations'])}")
    return ", ".join(parts)


def _call(call: dict[str, Any]) -> str:
    return f"{call['decision']}{'' if call['ok'] else ' (not ok)'}"


def _confidence(seen: dict[str, Any]) -> str:
    confidence = seen.get("confidence")
    return f" (confidence {confidence:.2f})" if isinstance(confidence, int | float) else ""


def _last_confidence(view: dict[str, Any]) -> str:
    confidence = view.get("confidence") or []
    return f": confidence {confidence[-1]:.2f}" if confidence else ""


def _text(text: Any) -> str:
    """Model's text for a terminal: lines kept, other control characters escaped."""
    return "\n".join(shown(line) for line in str(text).split("\n"))
