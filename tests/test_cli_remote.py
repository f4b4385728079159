"""`gateway run --url` and `gateway sessions show|list --url`: the command line as a real
process (no terminal, stdin piped) against a whole gateway's session API: a question
answered and an approval decided on stdin, a failed session, a refused key, an
unreachable gateway, Ctrl-C and --timeout (both cancel the session)."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx2
import pytest
from anyio.abc import ByteReceiveStream, Process

from gateway.cli.remote import EXIT_INTERRUPTED, EXIT_TIMEOUT, Board, Follower
from gateway.cli.rest import EXIT_API, Client
from gateway.state.base import START, Stream
from tests.api.harness import ACME, Api, api_gateway, clarify, envelope, reply, tool
from tests.conftest import ROOT, Run
from tests.front.harness import KEYS
from tests.helpers import clean_env
from tests.redis_server import free_port

pytestmark = pytest.mark.anyio

SECONDS = 60
"""A CLI process's run, at most."""


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with api_gateway(tmp_path) as running:
        yield running


def command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", *argv]


def environment(key: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in clean_env().items() if k != "GATEWAY_API_KEY"}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    if key is not None:
        env["GATEWAY_API_KEY"] = key
    return env


async def gateway(*argv: str, stdin: str = "", key: str | None = None) -> tuple[int, str, str]:
    """`gateway ARGV...` as a process, stdin piped (or /dev/null): its exit code, stdout
    and stderr; killed, reaped and failed with what it said when it outlives SECONDS."""
    said = {"out": b"", "err": b""}

    async def drain(stream: ByteReceiveStream | None, name: str) -> None:
        assert stream is not None
        async for chunk in stream:
            said[name] += chunk

    async with await anyio.open_process(
        command(*argv),
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        cwd=ROOT,
        env=environment(key),
    ) as process:
        with anyio.move_on_after(SECONDS) as waited:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(drain, process.stdout, "out")
                tasks.start_soon(drain, process.stderr, "err")
                if process.stdin is not None:
                    await process.stdin.send(stdin.encode())
                    await process.stdin.aclose()
                code = await process.wait()
        if waited.cancelled_caught:
            process.kill()
            await process.wait()
            raise AssertionError(f"still running after {SECONDS} s: {said['err'].decode()}")
    return code, said["out"].decode(), said["err"].decode()


def remote(api: Api, user: str = "alice") -> list[str]:
    return ["--url", api.base, "--api-key", KEYS[user]]


def session_of(err: str) -> str:
    first = err.splitlines()[0]
    assert first.startswith("session s_"), err
    return first.removeprefix("session ")


async def events(api: Api, session_id: str) -> list[dict[str, object]]:
    batch = await api.store.read(session_id, Stream.EVENTS, START, 1000)
    return [event.data for event in batch.events]


async def test_a_question_is_answered_on_stdin_and_the_reply_printed(api: Api) -> None:
    api.script(clarify("Which colour?"), reply("Blue it is."))
    code, out, err = await gateway("run", "pick one", *remote(api), stdin="blue\n")
    assert code == 0, err
    assert out == "Blue it is.\n"
    lines = err.splitlines()
    assert "· the model answered: clarify (confidence 0.90)" in lines
    assert "· session input_required (waiting for question)" in lines
    assert "? Which colour?" in lines
    assert "· session completed" in lines
    assert lines[-1].startswith("· spent turns 2/25, tool calls 0/50, ")
    session_id = session_of(err)
    answers = [e for e in await events(api, session_id) if e["type"] == "answer"]
    assert [a["text"] for a in answers] == ["blue"], "answered once"
    assert (await api.get(session_id))["reply"] == "Blue it is."


async def test_an_approval_is_approved_on_stdin(api: Api, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    journal.write_text("begun\n")  # (echo's pay fails at once on an empty journal)
    api.script(tool("echo__pay", journal=str(journal)), reply("Paid."))
    # The key from the environment, not the command line.
    code, out, err = await gateway(
        "run", "pay it", "--url", api.base, stdin="y\n", key=KEYS["alice"]
    )
    assert code == 0, err
    assert out == "Paid.\n"
    lines = err.splitlines()
    assert "· session input_required (waiting for approval)" in lines
    assert f'  1. echo__pay {{"journal": "{journal}"}}' in lines
    assert "     why: the user's tags ask for approval of this tool" in lines
    assert "· call echo__pay: allowed" in lines
    assert journal.read_text() == "begun\npay\n", "the approved call ran, once"


async def test_a_rejection_says_why(api: Api, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    api.script(tool("echo__pay", journal=str(journal)), reply("Not paid."))
    code, out, err = await gateway("run", "pay it", *remote(api), stdin="n\ntoo much\n")
    assert code == 0, err
    assert out == "Not paid.\n"
    assert not journal.exists(), "a rejected call is not made"
    decided = [e for e in await events(api, session_of(err)) if e["type"] == "approval_decided"]
    assert [(d["verdict"], d["message"]) for d in decided] == [("reject", "too much")]


async def test_a_failed_session_exits_non_zero_with_its_error(api: Api) -> None:
    api.script(envelope("error", reason="No tool can do that."))
    code, out, err = await gateway("run", "fly me to the moon", *remote(api))
    assert code == 1
    assert out == ""
    session_id = session_of(err)
    assert err.splitlines()[-1] == (
        f"gateway run: session {session_id} failed: the model gave up: No tool can do that."
    )


async def test_stdin_ending_leaves_the_question_waiting(api: Api) -> None:
    api.script(clarify("Which one?"), reply())
    code, out, err = await gateway("run", "pick one", *remote(api))
    assert code == 1
    assert out == "Which one?\n"
    session_id = session_of(err)
    assert f"session {session_id} waits for question" in err.splitlines()[-1]
    assert (await api.get(session_id))["status"] == "input_required", "not cancelled"


async def test_a_wrong_key_exits_with_the_apis_detail(api: Api) -> None:
    code, out, err = await gateway("run", "hello", "--url", api.base, "--api-key", "nope")
    assert code == EXIT_API
    assert out == ""
    assert err.splitlines() == [
        "gateway run: 401 unauthorized: the credential is not valid",
        "gateway run: give the caller's key with --api-key or $GATEWAY_API_KEY",
    ]


async def test_an_unreachable_gateway_exits_with_the_api_code() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = await gateway("run", "hello", "--url", url, "--api-key", "k")
    assert code == EXIT_API
    assert f"gateway run: cannot connect to {url}" in err


async def test_sessions_show_and_list_read_the_api(api: Api) -> None:
    api.script(tool("echo__echo", text="hi"), reply("all done"))
    session_id = await api.start(message="say hi")
    view = await api.until(session_id, "completed")
    code, out, err = await gateway("sessions", "show", session_id, *remote(api))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:2] == [f"session  {session_id}", "status   completed"]
    assert "message  say hi" in lines
    assert "reply    all done" in lines
    assert "call     echo__echo: allowed" in lines
    assert [line for line in lines if line.startswith("envelope")] == [
        "envelope tool     (confidence 0.90)",
        "envelope reply    (confidence 0.90)",
    ]
    assert any(line.startswith("spent    turns 2/25, tool calls 1/50, ") for line in lines)
    code, out, _ = await gateway("sessions", "show", session_id, "--json", *remote(api))
    assert code == 0
    assert json.loads(out) == view
    # Another caller's session is as unknown as one that does not exist.
    for user, which in (("bob", session_id), ("alice", "s_nothing")):
        code, _, err = await gateway("sessions", "show", which, *remote(api, user))
        assert code == 1
        assert err == f"gateway sessions show: no session {which!r}\n"
    code, out, err = await gateway("sessions", "list", "--json", *remote(api))
    assert code == 0, err
    assert [(row["id"], row["status"]) for row in json.loads(out)] == [(session_id, "completed")]
    code, out, _ = await gateway("sessions", "list", "--state", "failed", *remote(api))
    assert (code, out) == (0, "no sessions\n")
    code, _, err = await gateway("sessions", "list", "--state", "nope", *remote(api))
    assert code == EXIT_API
    assert "400 invalid_query: status must be one of" in err


FLOW = """
  - tag: flow_say
    kind: flow
    payload:
      config: {assigned_roles: [support]}
      content:
        description: Say a word
        inputs:
          type: object
          properties: {word: {type: string}}
          required: [word]
        steps:
          - id: say
            tool: echo__echo
            args: {word: "{{ input.word }}"}
        output: "said {{ input.word }}"
"""


async def test_a_flow_runs_with_its_inputs(tmp_path: Path) -> None:
    async with api_gateway(tmp_path, acme=ACME + FLOW) as api:
        flow = ["--flow", "flow_say", *remote(api)]
        code, out, err = await gateway("run", *flow, "--inputs", '{"word": "hi"}')
        assert code == 0, err
        assert out == "said hi\n"
        assert "· call echo__echo: allowed" in err.splitlines()
        code, out, err = await gateway("run", *flow, "--inputs", "{}")
        assert code == EXIT_API
        assert err.startswith("gateway run: 422 invalid_inputs: the input of flow 'flow_say'")


async def test_ctrl_c_cancels_the_session(api: Api) -> None:
    api.script(clarify("Which one?"), reply())
    err = b""
    async with await anyio.open_process(
        command("run", "pick one", *remote(api)), cwd=ROOT, env=environment()
    ) as process:
        try:
            with anyio.fail_after(SECONDS):
                err = await _until_said(process, b"? Which one?\n")
                process.send_signal(signal.SIGINT)
                assert process.stderr is not None
                async for chunk in process.stderr:
                    err += chunk
                code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
    text = err.decode()
    assert code == EXIT_INTERRUPTED, text
    session_id = session_of(text)
    assert text.splitlines()[-1] == f"gateway run: interrupted; session {session_id} canceled"
    assert (await api.until(session_id, "canceled"))["status"] == "canceled"


async def test_timeout_cancels_a_session_that_runs_on(api: Api) -> None:
    api.script(tool("echo__sleep", seconds=30), reply())
    code, _, err = await gateway("run", "wait", *remote(api), "--timeout", "1")
    assert code == EXIT_TIMEOUT, err
    session_id = session_of(err)
    lines = err.splitlines()
    assert f"gateway run: session {session_id} did not end within 1 s (--timeout)" in lines
    assert lines[-1] == f"gateway run: timed out; session {session_id} canceled"
    assert (await api.until(session_id, "canceled"))["status"] == "canceled"


def test_url_and_local_options_do_not_mix(run: Run) -> None:
    code, _, err = run("run", "hi", "--url", "http://127.0.0.1:1", "--user", "alice")
    assert code == 2
    assert "--user: not with --url" in err
    code, _, err = run("run", "hi", "--api-key", "k", "--user", "alice", "--org", "acme")
    assert code == 2
    assert "--api-key: only with --url" in err
    code, _, err = run("run", "hi", "--url", "ftp://x")
    assert code == 2
    assert "--url must be an http:// or https:// URL" in err
    # Without --url, as it always was.
    code, _, err = run("run", "hi")
    assert code == 2
    assert "gateway run: error: the following arguments are required: --org, --user" in err


async def _until_said(process: Process, said: bytes) -> bytes:
    """What the process wrote on stderr until `said` (the caller bounds the wait)."""
    assert process.stderr is not None
    err = b""
    async for chunk in process.stderr:
        err += chunk
        if said in err:
            return err
    raise AssertionError(f"the process ended without saying {said!r}: {err.decode()}")


# --- what only a gateway of our own making does -------------------------------------------


def asking(last_event: str, status: str = "input_required", **fields: object) -> dict[str, object]:
    waiting = "question" if status == "input_required" else None
    view: dict[str, object] = {
        "id": "s_1", "status": status, "waiting": waiting, "question": "Which one?",
        "approval": None, "reply": None, "error": None, "calls": [], "envelopes": [],
        "confidence": [], "spent": {"turns": 1}, "budgets": {"wall_seconds": 5},
        "last_event": last_event,
    }  # fmt: skip
    return {**view, **fields}


def test_an_answer_refused_while_the_engine_lets_go_is_sent_again(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A session shows its question a moment before the engine that asked lets go of it:
    an answer then is refused (409 not_waiting), and sent again while the question still
    stands; a poll that fails in transit is tried again."""
    answers: list[str] = []
    polls = iter([
        httpx2.Response(200, json=asking("1-0")),
        httpx2.Response(200, json=asking("1-0")),  # the check before sending it again
        httpx2.Response(503, json={"error": "unavailable", "detail": "busy"}),
        httpx2.Response(200, json=asking("2-0", "completed", reply="Blue.", waiting=None)),
    ])  # fmt: skip

    def answer(request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET":
            return next(polls)
        answers.append(json.loads(request.content)["message"])
        if len(answers) == 1:
            detail = "session 's_1' is already being answered: it is not waiting for this"
            return httpx2.Response(409, json={"error": "not_waiting", "detail": detail})
        return httpx2.Response(202, json={"id": "s_1", "status": "working"})

    monkeypatch.setattr("sys.stdin", io.StringIO("blue\n"))
    monkeypatch.setattr("gateway.cli.remote.FIRST_POLL", 0.01)
    client = Client("http://gateway.test", "k", httpx2.MockTransport(answer))
    follower = Follower(client, Board(sys.stderr), "s_1", None)
    assert follower.follow() == 0
    assert answers == ["blue", "blue"]
    out, err = capsys.readouterr()
    assert out == "Blue.\n"
    assert "· 503 unavailable: busy; trying again" in err.splitlines()
    assert "not taken" not in err


def test_an_answer_taken_elsewhere_is_not_sent_again(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once the session has moved on, a refused answer stays refused: it could answer a
    question it was not given for."""
    answers: list[str] = []
    polls = iter([
        httpx2.Response(200, json=asking("1-0")),
        httpx2.Response(200, json=asking("3-0", question="And which size?")),
        httpx2.Response(200, json=asking("3-0", question="And which size?")),
        httpx2.Response(200, json=asking("4-0", "completed", reply="Blue, large.", waiting=None)),
    ])  # fmt: skip

    def answer(request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET":
            return next(polls)
        answers.append(json.loads(request.content)["message"])
        if len(answers) == 1:
            detail = "session 's_1' is already being answered: it is not waiting for this"
            return httpx2.Response(409, json={"error": "not_waiting", "detail": detail})
        return httpx2.Response(202, json={"id": "s_1", "status": "working"})

    monkeypatch.setattr("sys.stdin", io.StringIO("blue\nlarge\n"))
    monkeypatch.setattr("gateway.cli.remote.FIRST_POLL", 0.01)
    client = Client("http://gateway.test", "k", httpx2.MockTransport(answer))
    assert Follower(client, Board(sys.stderr), "s_1", None).follow() == 0
    assert answers == ["blue", "large"], "each question answered once, with its own answer"
    out, err = capsys.readouterr()
    assert out == "Blue, large.\n"
    assert "? And which size?" in err.splitlines()
    assert "· not taken: session 's_1' is already being answered" in err
