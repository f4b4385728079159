"""`gateway run` (one session in this process, its questions answered from stdin) and
`gateway sessions list` / `show` (sessions in a Redis store, as a gateway leaves them)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import DEMO_CONFIG, Run
from tests.engine.helpers import envelope, reply

ACME = """
users:
  alice: {roles: [agent]}
tags:
  - tag: agent
    kind: role
    payload:
      content: You help.
      config: {assigned_roles: [agent]}
"""


def config(tmp_path: Path, state_url: str = "memory://") -> str:
    (tmp_path / "orgs").mkdir()
    (tmp_path / "orgs" / "acme.yaml").write_text(ACME)
    script = [envelope("clarify", question="Which one?"), reply("The blue one, noted.")]
    (tmp_path / "script.yaml").write_text(json.dumps(script))
    path = tmp_path / "gateway.yaml"
    path.write_text(
        json.dumps(
            {
                "data_dir": str(tmp_path / "data"),
                "tags": {"dir": "orgs", "watch": False},
                "state": {"url": state_url},
                "engine": {"planner": "scripted", "script": "script.yaml"},
            }
        )
    )
    return str(path)


def test_run_prints_the_progress_and_the_reply(run: Run) -> None:
    code, out, err = run("run", "Who is maya?", "--user", "alice", "--org", "acme",
                         "--config", str(DEMO_CONFIG))  # fmt: skip
    assert code == 0, err
    assert out.startswith("Maya Lopez (C-1001")
    lines = err.splitlines()
    assert lines[0].startswith("session s_")
    assert "· calling crm__search_customers" in lines
    assert lines[-1] == "· session completed"


def test_run_asks_its_questions_on_stdin(run: Run, tmp_path: Path) -> None:
    path = config(tmp_path)
    code, out, err = run(
        "run", "pick one", "--user", "alice", "--org", "acme", "--config", path, stdin="blue\n"
    )
    assert code == 0, err
    assert out == "The blue one, noted.\n"
    assert "? Which one?" in err.splitlines()


def test_run_without_an_answer_says_what_the_session_waits_for(run: Run, tmp_path: Path) -> None:
    path = config(tmp_path)
    code, out, err = run("run", "pick one", "--user", "alice", "--org", "acme", "--config", path)
    assert code == 1
    assert out == "Which one?\n"
    assert "waits for question" in err.splitlines()[-1]


def test_sessions_list_and_show_read_a_shared_store(
    run: Run, tmp_path: Path, redis_url: str
) -> None:
    path = config(tmp_path, redis_url)
    code, _, err = run(
        "run", "pick one", "--user", "alice", "--org", "acme", "--config", path, stdin="blue\n"
    )
    assert code == 0, err
    code, out, err = run("sessions", "list", "--json", "--config", path)
    assert code == 0, err
    (listed,) = json.loads(out)
    assert (listed["state"], listed["user"], listed["org"]) == ("completed", "alice", "acme")
    assert listed["outcome"] == "The blue one, noted."
    assert "transcript" not in listed, "the model's side is not shown"
    code, out, _ = run("sessions", "list", "--state", "failed", "--config", path)
    assert (code, out) == (0, "no sessions\n")
    code, out, err = run("sessions", "show", listed["id"], "--config", path)
    assert code == 0, err
    assert f"session  {listed['id']}" in out
    assert "state    completed" in out
    shown = [line.split()[1] for line in out.splitlines() if line.startswith("  ")]
    assert shown[0] == "accepted"
    assert "answer" in shown
    assert shown[-1] == "state"
    code, _, err = run("sessions", "show", "s_nothing", "--config", path)
    assert code == 1
    assert "no session 's_nothing'" in err


def test_sessions_of_a_memory_store_cannot_be_read_from_outside(run: Run, tmp_path: Path) -> None:
    code, _, err = run("sessions", "list", "--config", config(tmp_path))
    assert code == 2
    assert "only a shared store (redis://) can be read from here" in err
    assert "state.url" in err


def test_sessions_show_escapes_what_callers_wrote(run: Run, tmp_path: Path, redis_url: str) -> None:
    """A message may carry terminal escape sequences (a clipboard write, a cleared
    screen): shown escaped, never sent to the admin's terminal as they are."""
    path = config(tmp_path, redis_url)
    hostile = "pick \x1b]52;c;ZXZpbA==\x07 one \x1b[2J"
    code, _, err = run(
        "run", hostile, "--user", "alice", "--org", "acme", "--config", path, stdin="blue\n"
    )
    assert code == 0, err
    code, out, _ = run("sessions", "list", "--json", "--config", path)
    (listed,) = json.loads(out)
    code, shown, _ = run("sessions", "show", listed["id"], "--config", path)
    assert code == 0
    assert "\x1b" not in shown
    assert "\x07" not in shown
    assert "message  pick \\x1b]52;c;ZXZpbA==\\x07 one \\x1b[2J" in shown
