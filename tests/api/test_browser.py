"""The session API's browser clients, end to end in headless Chromium: the web page the
gateway serves at `/` (a session over REST and Server-Sent Events) and the widget a page of
someone else's embeds with one script tag (a session over the WebSocket).

Real `gateway serve` processes run on configs with a scripted planner: one whose sessions
ask a question first and reply once answered; one whose sessions call a tool that the
caller's tags hold for approval, then reply. The browser is the system's Chromium
(scripts/ensure-chromium), driven by the playwright package: never `playwright install`.
Without /usr/bin/chromium these tests skip, except under CI, where they fail.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.conftest import ROOT
from tests.engine.helpers import envelope, reply, tool
from tests.helpers import clean_env
from tests.redis_server import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
HOST_PAGE = Path(__file__).with_name("ui_host.html")

KEY = "browser-test-key-alice-0001"
QUESTION = "Which colour would you like, blue or green?"
ANSWER = "blue"
REPLY = "The blue one, noted."
HELD_TOOL = "gateway__run_session"
HELD_MESSAGE = "look it up"
WAIT_MS = 5_000
"""Every wait for the page: a few seconds (the scripted session takes milliseconds)."""
START_SECONDS = 30.0

ACME = """
users:
  alice: {roles: [agent]}
tags:
  - tag: agent
    kind: role
    payload:
      content: You help.
      config:
        assigned_roles: [agent]
        allowed_tools: [gateway__run_session]
        needs_approval: [gateway__run_session]
"""


@dataclass
class Gateway:
    base: str
    log: Path
    process: subprocess.Popen[bytes]

    def tail(self, lines: int = 60) -> str:
        """The end of what the gateway printed, for a failing test's report."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A REST call as alice: its status and JSON body, error statuses included."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {KEY}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                status: int = response.status
                return status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:
                text = exc.read()
            try:
                return exc.code, json.loads(text)
            except ValueError:
                return exc.code, text.decode(errors="replace")


def write_config(directory: Path, script: list[dict[str, Any]]) -> Path:
    (directory / "orgs").mkdir()
    (directory / "orgs" / "acme.yaml").write_text(ACME)
    (directory / "script.yaml").write_text(json.dumps(script))
    config = {
        "data_dir": str(directory / "data"),
        "server": {"host": "127.0.0.1"},
        "auth": {"dev": True, "api_keys": [{"user": "alice", "org": "acme", "key": KEY}]},
        "tags": {"dir": "orgs", "watch": False},
        "state": {"url": "memory://"},
        "engine": {"planner": "scripted", "script": "script.yaml"},
    }
    path = directory / "gateway.yaml"
    path.write_text(json.dumps(config))
    return path


@contextlib.contextmanager
def serving(directory: Path, script: list[dict[str, Any]]) -> Iterator[Gateway]:
    """`gateway serve` on a config whose scripted planner plays `script` in every
    session, its output in a log file (a pipe nobody reads could fill and stall it);
    waited for (bounded) until /health answers, and always killed and reaped, with
    anything it started (its own process group)."""
    config = write_config(directory, script)
    port = free_port()
    command = [str(Path(sys.executable).parent / "gateway"), "serve", "--config", str(config)]
    log = directory / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=ROOT,
            env={**clean_env(), "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Gateway(f"http://127.0.0.1:{port}", log, process)
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"gateway serve exited with {process.returncode}:\n{running.tail()}")
            try:
                with urllib.request.urlopen(f"{running.base}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"/health did not answer in {START_SECONDS:g} s:\n{running.tail()}")
                time.sleep(0.1)
        yield running
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway whose sessions ask a question first, then reply."""
    script = [envelope("clarify", question=QUESTION), reply(REPLY)]
    with serving(tmp_path_factory.mktemp("browser-asks"), script) as running:
        yield running


@pytest.fixture(scope="module")
def approving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway whose sessions call a tool that alice's tags hold for her approval
    (gateway__run_session: once approved, the session's own limit refuses it, since a
    session may not start another here), then reply."""
    script = [tool(HELD_TOOL, message=HELD_MESSAGE), reply(REPLY)]
    with serving(tmp_path_factory.mktemp("browser-approves"), script) as running:
        yield running


@pytest.fixture(scope="module", autouse=True)
def browser() -> Iterator[Browser]:
    """The system's Chromium, headless; autouse, so that a missing browser skips (or
    fails, under CI) before any gateway is started."""
    if not CHROMIUM.exists():
        why = f"{CHROMIUM} is not installed (scripts/ensure-chromium installs it)"
        if os.environ.get("CI"):
            pytest.fail(f"{why}; under CI the browser tests must run")
        pytest.skip(why)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=20_000
        )
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Tab:
    page: Page
    name: str
    problems: list[str]
    """What the page's scripts said went wrong: console errors, uncaught exceptions."""

    @contextlib.contextmanager
    def watched(self, gateway: Gateway) -> Iterator[None]:
        """On a failure: a screenshot, and the end of the gateway's log in the report."""
        try:
            yield
        except Exception as exc:
            with contextlib.suppress(Exception):
                exc.add_note(f"screenshot: {shoot(self.page, self.name + '-failure')}")
            exc.add_note(f"--- the gateway's log (end) ---\n{gateway.tail()}")
            raise


@pytest.fixture
def tab(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Tab]:
    """A page in a fresh browser context (its own sessionStorage), every wait bounded."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(WAIT_MS)
    context.set_default_navigation_timeout(WAIT_MS)
    page = context.new_page()
    opened = Tab(page, request.node.name, [])
    page.on(
        "console",
        lambda message: (
            opened.problems.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    page.on("pageerror", lambda error: opened.problems.append(f"pageerror: {error}"))
    try:
        yield opened
    finally:
        context.close()


def shoot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"browser-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def served(gateway: Gateway, page: Page) -> None:
    """Open the gateway's page; a clear failure when the API does not serve it."""
    response = page.goto(f"{gateway.base}/")
    assert response is not None
    assert response.status == 200, (
        f"GET / answered {response.status}: the session API does not serve its page "
        "(gateway/api/ui/index.html)"
    )
    expect(page.locator("html")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)


def test_the_page_runs_a_session_that_asks_and_replies(gateway: Gateway, tab: Tab) -> None:
    with tab.watched(gateway):
        page = tab.page
        served(gateway, page)
        key = page.locator("#api-key")
        assert key.get_attribute("type") == "password"
        key.fill(KEY)
        # Markup in a message is text on the page, never markup.
        message = "pick one <b id='injected'>colour</b>"
        page.locator("#message").fill(message)
        page.locator("#start").click()

        expect(page.locator("#question")).to_have_text(QUESTION, timeout=WAIT_MS)
        expect(page.locator("#status")).to_have_attribute("data-status", "input_required")
        expect(page.locator("#ask")).to_be_visible()
        expect(page.locator("#session-message")).to_have_text(message)
        assert page.locator("#injected").count() == 0
        session_id = page.locator("#session-id").inner_text()
        assert session_id.startswith("s_"), session_id
        shoot(page, "page-question")

        page.locator("#answer").fill(ANSWER)
        page.locator("#answer-send").click()
        expect(page.locator("#reply")).to_have_text(REPLY, timeout=WAIT_MS)
        expect(page.locator("#status")).to_have_attribute("data-status", "completed")
        expect(page.locator("#status")).to_have_text("completed")
        expect(page.locator("#ask")).to_be_hidden()
        expect(page.locator("#cancel")).to_be_disabled()

        events = "#events [data-testid=event]"
        for kind in ("envelope", "question", "answer", "reply"):
            expect(page.locator(f"{events}[data-type={kind}]").first).to_be_visible()
        expect(page.locator(f"{events}[data-type=answer]")).to_contain_text(ANSWER)
        expect(page.locator(f"{events}[data-type=state]").last).to_contain_text("completed")
        expect(page.locator("#events [data-testid=confidence]").first).to_contain_text("0.90")
        shoot(page, "page-completed")

        # The key stays in this tab's sessionStorage: not in the URL, not in localStorage.
        assert KEY not in page.url
        assert page.evaluate("sessionStorage.getItem('gateway.apiKey')") == KEY
        assert page.evaluate("localStorage.length") == 0

        # The session is among the recent ones, and reopens from there after a reload.
        page.locator("#sessions-refresh").click()
        listed = page.locator(f"#sessions [data-testid=session-item][data-id='{session_id}']")
        expect(listed).to_be_visible()
        expect(listed).to_contain_text("completed")
        page.goto(f"{gateway.base}/")
        expect(page.locator("#api-key")).to_have_value(KEY)
        listed.locator("[data-testid=session-open]").click()
        expect(page.locator("#session-id")).to_have_text(session_id)
        expect(page.locator("#reply")).to_have_text(REPLY)
        expect(page.locator("#status")).to_have_attribute("data-status", "completed")
        assert tab.problems == []


def first_frames(url: str, headers: dict[str, str], count: int) -> tuple[str, list[str]]:
    """The start of the event stream at `url`, through its `count`th event with an id
    (the snapshot before them), as the stream sent it; and those events' ids."""
    wanted = {k: v for k, v in headers.items() if k.lower() in ("authorization", "accept")}
    lines: list[str] = []
    ids: list[str] = []
    with urllib.request.urlopen(urllib.request.Request(url, headers=wanted), timeout=5) as body:
        while len(ids) < count:
            line = body.readline().decode()
            assert line, f"the stream ended after {lines!r}"
            lines.append(line)
            if line.startswith("id:"):
                ids.append(line[3:].strip())
        while lines[-1].strip():  # the rest of the last frame
            lines.append(body.readline().decode())
    return "".join(lines), ids


def test_the_page_resumes_its_event_stream_after_a_dropped_connection(
    gateway: Gateway, tab: Tab
) -> None:
    """The first connection to the event stream breaks after three events: the page
    connects again with Last-Event-ID, and shows each event once."""
    with tab.watched(gateway):
        page = tab.page
        asked: list[str | None] = []
        cut: list[str] = []

        def events(route: Route) -> None:
            asked.append(route.request.headers.get("last-event-id"))
            if len(asked) > 1:
                route.continue_()
                return
            start, ids = first_frames(route.request.url, route.request.headers, 3)
            cut.extend(ids)
            route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=start)

        page.route("**/events/*", events)
        served(gateway, page)
        page.locator("#api-key").fill(KEY)
        page.locator("#message").fill("pick one")
        page.locator("#start").click()
        expect(page.locator("#question")).to_have_text(QUESTION)
        # The question came on the second connection, which resumed after the cut.
        expect(page.locator("#events [data-testid=event][data-type=question]")).to_have_count(1)
        assert asked == [None, cut[-1]], (asked, cut)
        page.locator("#answer").fill(ANSWER)
        page.locator("#answer-send").click()
        expect(page.locator("#reply")).to_have_text(REPLY)
        expect(page.locator("#status")).to_have_attribute("data-status", "completed")
        events_shown = page.locator("#events [data-testid=event]")
        for kind, times in (("accepted", 1), ("envelope", 2), ("question", 1), ("state", 4)):
            expect(events_shown.and_(page.locator(f"[data-type={kind}]"))).to_have_count(times)
        expect(events_shown).to_have_count(10)
        expect(page.locator("#events [data-type=gap]")).to_have_count(0)
        assert tab.problems == []


def test_the_page_cancels_a_session_that_waits(gateway: Gateway, tab: Tab) -> None:
    with tab.watched(gateway):
        page = tab.page
        served(gateway, page)
        page.locator("#api-key").fill(KEY)
        page.locator("#message").fill("pick one, or not")
        page.locator("#start").click()
        expect(page.locator("#question")).to_have_text(QUESTION)
        expect(page.locator("#cancel")).to_be_enabled()
        page.locator("#cancel").click()
        expect(page.locator("#status")).to_have_attribute("data-status", "canceled")
        expect(page.locator("#ask")).to_be_hidden()
        expect(page.locator("#cancel")).to_be_disabled()
        last = page.locator("#events [data-testid=event][data-type=state]").last
        expect(last).to_contain_text("canceled")
        expect(page.locator("#connection")).to_have_attribute("data-state", "closed")
        assert tab.problems == []


def test_the_page_says_in_plain_words_when_the_key_is_wrong(gateway: Gateway, tab: Tab) -> None:
    with tab.watched(gateway):
        page = tab.page
        served(gateway, page)
        page.locator("#api-key").fill("not-a-key-of-this-gateway")
        page.locator("#message").fill("hello")
        page.locator("#start").click()
        expect(page.locator("#error")).to_be_visible()
        expect(page.locator("#error-text")).to_contain_text("did not accept the key")
        expect(page.locator("#error-text")).to_contain_text("401")
        expect(page.locator("#session-id")).to_have_text("none")


class HostPage(http.server.BaseHTTPRequestHandler):
    """Serves one page (the host page of the widget) at every path."""

    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def host_page(gateway: Gateway, token: str) -> Iterator[str]:
    """tests/api/ui_host.html with the gateway and token filled in, served on a loopback
    port of its own: another origin than the gateway's, as a real embedding page is."""
    html = HOST_PAGE.read_text().replace("{{GATEWAY}}", gateway.base).replace("{{TOKEN}}", token)
    handler = type("FilledHostPage", (HostPage,), {"body": html.encode()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/shop"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_widget_runs_a_session_over_the_websocket(gateway: Gateway, tab: Tab) -> None:
    with tab.watched(gateway):
        status, minted = gateway.call("POST", "/tokens", {})
        assert status == 201, (status, minted)
        token = minted["token"]
        assert isinstance(token, str)
        assert token
        page = tab.page
        with host_page(gateway, token) as url:
            response = page.goto(url)
            assert response is not None
            assert response.status == 200
            widget = page.locator("#chat [data-testid=widget]")  # in the open shadow root
            expect(widget).to_be_visible(timeout=WAIT_MS)
            send = widget.locator("[data-testid=widget-send]")
            # The host's styles (a hotpink button) stop at the shadow root.
            assert send.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(47, 91, 211)"

            widget.locator("[data-testid=widget-input]").fill("pick one")
            send.click()
            expect(widget.locator("[data-testid=widget-user]").first).to_have_text("pick one")
            expect(widget.locator("[data-testid=widget-question]")).to_have_text(QUESTION)
            expect(widget.locator("[data-testid=widget-status]")).to_have_attribute(
                "data-status", "input_required"
            )
            shoot(page, "widget-question")

            widget.locator("[data-testid=widget-input]").fill(ANSWER)
            widget.locator("[data-testid=widget-input]").press("Enter")
            expect(widget.locator("[data-testid=widget-reply]")).to_have_text(REPLY)
            expect(widget.locator("[data-testid=widget-status]")).to_have_attribute(
                "data-status", "completed"
            )
            expect(widget.locator("[data-testid=widget-error]")).to_have_count(0)
            shoot(page, "widget-completed")
            session_id = widget.get_attribute("data-session")
        assert session_id is not None
        assert session_id.startswith("s_"), session_id

        # The widget's session is a session of the token's user, as the API tells it.
        status, view = gateway.call("GET", f"/sessions/{session_id}")
        assert status == 200, (status, view)
        assert view["status"] == "completed"
        assert view["reply"] == REPLY
        assert view["message"] == "pick one"
        assert tab.problems == []


def test_the_page_holds_a_call_for_approval_and_runs_it_once_approved(
    approving: Gateway, tab: Tab
) -> None:
    with tab.watched(approving):
        page = tab.page
        served(approving, page)
        page.locator("#api-key").fill(KEY)
        page.locator("#message").fill("please look it up")
        page.locator("#start").click()
        expect(page.locator("#approval")).to_be_visible()
        expect(page.locator("#status")).to_have_attribute("data-status", "input_required")
        held = page.locator("#approval-calls [data-testid=approval-call]")
        expect(held).to_have_count(1)
        expect(held).to_contain_text(HELD_TOOL)
        expect(held.locator("[data-testid=approval-arguments]")).to_have_value(
            json.dumps({"message": HELD_MESSAGE}, indent=2)
        )
        expect(page.locator("#ask")).to_be_hidden()
        shoot(page, "page-approval")

        page.locator("#approve").click()
        expect(page.locator("#reply")).to_have_text(REPLY)
        expect(page.locator("#status")).to_have_attribute("data-status", "completed")
        expect(page.locator("#approval")).to_be_hidden()
        decided = page.locator("#events [data-testid=event][data-type=approval_decided]")
        expect(decided).to_contain_text("approve")
        # Approved, the call still meets the session's own limit: refused, and shown so.
        refused = page.locator("#events [data-outcome=refused]")
        expect(refused).to_have_count(1)
        expect(refused).to_have_attribute("data-decision", "nested_session")
        expect(refused).to_contain_text("refused: nested_session")
        shoot(page, "page-approved")

        # Another session, rejected with a message: the model is told, and replies.
        page.locator("#message").fill("once more")
        page.locator("#start").click()
        expect(page.locator("#approval")).to_be_visible()
        page.locator("#approval-message").fill("not today")
        page.locator("#reject").click()
        expect(page.locator("#status")).to_have_attribute("data-status", "completed")
        expect(decided).to_contain_text("reject")
        expect(decided).to_contain_text("not today")
        expect(page.locator("#events [data-outcome=refused]")).to_have_count(0)
        assert tab.problems == []


def test_the_widget_holds_a_call_for_approval_over_the_websocket(
    approving: Gateway, tab: Tab
) -> None:
    with tab.watched(approving):
        status, minted = approving.call("POST", "/tokens", {})
        assert status == 201, (status, minted)
        page = tab.page
        with host_page(approving, minted["token"]) as url:
            page.goto(url)
            widget = page.locator("#chat [data-testid=widget]")
            widget.locator("[data-testid=widget-input]").fill("please look it up")
            widget.locator("[data-testid=widget-send]").click()
            approval = widget.locator("[data-testid=widget-approval]")
            expect(approval).to_be_visible()
            expect(approval.locator("[data-testid=widget-approval-call]")).to_contain_text(
                HELD_TOOL
            )
            shoot(page, "widget-approval")
            approval.locator("[data-testid=widget-approve]").click()
            expect(widget.locator("[data-testid=widget-reply]")).to_have_text(REPLY)
            expect(widget.locator("[data-testid=widget-tool]")).to_contain_text("refused")
            expect(widget.locator("[data-testid=widget-error]")).to_have_count(0)
        assert tab.problems == []
