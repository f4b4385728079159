"""The `gateway` command line: check, tags resolve, tags why, and serve."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.settings import load_config
from gateway.state import TTLs
from tests.conftest import DEMO_CONFIG, ROOT, Run
from tests.helpers import clean_env, get_json, serving, why_config
from tests.redis_server import free_port


def demo(*argv: str) -> list[str]:
    return [*argv, "--config", str(DEMO_CONFIG)]


def test_check_accepts_the_demo_config(run: Run) -> None:
    code, out, _ = run(*demo("check"))
    assert code == 0
    assert out.startswith("ok: ")
    assert "(2 orgs, 16 tags)" in out


def test_check_lists_every_error_and_exits_2(run: Run, tmp_path: Path) -> None:
    (tmp_path / "orgs").mkdir()
    (tmp_path / "gateway.yaml").write_text("tags: {dir: orgs}\n")
    (tmp_path / "orgs" / "acme.yaml").write_text("tags:\n  - {tag: a, kind: nope}\n")
    (tmp_path / "orgs" / "globex.yaml").write_text("users: {bob: {roles: [r]}, bob: {}}\n")
    code, out, err = run("check", "--config", str(tmp_path / "gateway.yaml"))
    assert code == 2
    assert out == ""
    assert err.startswith("2 configuration errors:\n")
    assert "orgs/acme.yaml:2: tag 'a': kind: Input should be" in err
    assert "orgs/globex.yaml:1: invalid YAML: duplicate key 'bob' (first at line 1)" in err


def test_check_reports_a_bad_gateway_yaml(run: Run, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("server:\n  port: 99999\n  hots: x\n")
    code, _, err = run("check", "--config", str(config))
    assert code == 2
    assert f"{config}:2: server.port: Input should be less than or equal to 65535" in err
    assert f"{config}:3: server.hots: unknown field" in err


def test_check_reports_a_missing_config(run: Run, tmp_path: Path) -> None:
    code, _, err = run("check", "--config", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert "nope.yaml: cannot read file" in err


def test_resolve_json_has_the_documented_keys(run: Run) -> None:
    code, out, _ = run(*demo("tags", "resolve", "--org", "acme", "--user", "alice", "--json"))
    assert code == 0
    data = json.loads(out)
    assert {"tags", "tools", "denied", "scopes", "flows", "prompt"} <= set(data)
    assert data["principal"] == {
        "user": "alice",
        "org": "acme",
        "roles": ["support_agent"],
        "role_source": "org file",
    }
    tools = {t["tool"]: t["granted_by"] for t in data["tools"]}
    assert tools["payments__refund"] == ["tool_refund_small"]
    assert data["flows"][0]["tag"] == "flow_refund"
    assert data["prompt"].startswith("## Acme Retail\n")


def test_resolve_text_explains(run: Run) -> None:
    code, out, _ = run(*demo("tags", "resolve", "--org", "acme", "--user", "dave"))
    assert code == 0
    assert "role_intern" in out
    assert "assigned role intern" in out
    assert "  payments__*    role_intern\n" in out


def test_resolve_with_roles_and_intent(run: Run) -> None:
    code, out, _ = run(
        *demo(
            "tags",
            "resolve",
            "--org",
            "acme",
            "--user",
            "x",
            "--roles",
            "support_agent",
            "--intent",
            "billing",
            "--json",
        )
    )
    assert code == 0
    data = json.loads(out)
    assert data["principal"]["role_source"] == "identity provider"
    assert {
        "tag": "fn_refunds",
        "reason": "intents refund, order_problem do not include 'billing'",
    } in data["skipped"]


WHY = ("tags", "why", "--org", "acme", "--user", "alice", "--tool", "payments__refund")


def test_why_denied_with_reason_and_exit_1(run: Run, tmp_path: Path) -> None:
    arguments = '{"amount": 250, "order_id": "ORD-123456", "currency": "EUR"}'
    code, out, _ = run(*WHY, "--args", arguments, "--config", why_config(tmp_path))
    assert code == 1
    assert out == (
        "NOT PERMITTED: payments__refund\namount 250 exceeds max 100 set by tag tool_refund_small\n"
        "inputSchema: unknown (no upstream listing recorded yet): an absent argument is taken "
        "to have no default\n"
    )


def test_why_permitted_json(run: Run, tmp_path: Path) -> None:
    arguments = '{"amount": 25, "order_id": "ORD-123456", "currency": "USD"}'
    code, out, _ = run(*WHY, "--args", arguments, "--json", "--config", why_config(tmp_path))
    assert code == 0
    assert json.loads(out) == {
        "tool": "payments__refund",
        "allowed": True,
        "outcome": "allowed",
        "reason": "granted by tag tool_refund_small; arguments within its scope",
        "granted_by": ["tool_refund_small"],
        "denied_by": [],
        "admitted_by": "tool_refund_small",
        "violations": [],
        "schema": "unknown (no upstream listing recorded yet): an absent argument is taken "
        "to have no default",
        "arguments": {"amount": 25, "order_id": "ORD-123456", "currency": "USD"},
    }


def test_why_checks_what_the_upstream_would_use_like_the_call(run: Run, tmp_path: Path) -> None:
    # currency is bounded (enum) and left out: without the tool's schema it could be
    # anything the upstream picks; with it, it is the declared default, checked and sent.
    arguments = '{"amount": 25, "order_id": "ORD-123456"}'
    code, out, _ = run(*WHY, "--args", arguments, "--config", why_config(tmp_path))
    assert code == 1
    assert "currency is missing and the tool declares no default for it" in out
    code, out, _ = run(*WHY, "--args", arguments, "--config", why_config(tmp_path, recorded=True))
    assert code == 0, out
    assert out.splitlines()[1:] == [
        "granted by tag tool_refund_small; arguments within its scope",
        "inputSchema: as upstream 'payments' last listed it (its declared defaults apply)",
        'sent as: {"amount": 25, "order_id": "ORD-123456", "currency": "USD"}',
    ]


def test_why_rejects_bad_args(run: Run) -> None:
    code, _, err = run(
        *demo("tags", "why", "--org", "acme", "--user", "a", "--tool", "t", "--args", "[1]")
    )
    assert code == 2
    assert "--args must be a JSON object" in err
    code, _, err = run(
        *demo("tags", "why", "--org", "acme", "--user", "a", "--tool", "t", "--args", "{")
    )
    assert code == 2
    assert "--args is not valid JSON" in err


def test_console_script_is_installed() -> None:
    gateway = Path(sys.executable).parent / "gateway"
    done = subprocess.run(
        [str(gateway), "check", "--config", str(DEMO_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: ")


def test_serve_starts_says_what_it_serves_and_stops() -> None:
    # The README's quick-start command itself, on the demo config.
    with serving([str(ROOT / "scripts" / "serve")], clean_env()) as (proc, port):
        status, _, body = get_json(f"http://127.0.0.1:{port}/health")
        assert (status, body) == (
            200,
            {
                "status": "ok",
                "tags": {"version": 1, "last_reload_failed": False},
                # the demo's payments, crm, orders, time, and the gateway's own tools
                "upstreams": {"ready": 5},
            },
        )
        status, _, ready = get_json(f"http://127.0.0.1:{port}/ready")
        assert (status, ready) == (
            200,
            {"ready": True, "state": {"url": "memory://", "reason": None}},
        )
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0
        assert f"serving /mcp, /health, /ready on http://127.0.0.1:{port}" in err
        assert "state store memory://" in err
        assert "tag config version 1" in err


def test_serve_without_its_redis_runs_and_says_it_is_not_ready() -> None:
    """Redis down at start-up: the gateway neither exits nor crash-loops; /ready answers
    503 with the URL and the reason, and keeps retrying in the background."""
    closed = free_port()  # nothing listens there
    url = f"redis://:secret@127.0.0.1:{closed}/0"
    env = {**clean_env(), "GATEWAY_STATE_URL": url}
    gateway = str(Path(sys.executable).parent / "gateway")
    with serving([gateway, "serve", "--config", str(DEMO_CONFIG)], env) as (proc, port):
        status, _, _ = get_json(f"http://127.0.0.1:{port}/health")
        assert status == 200
        time.sleep(1.0)  # a few retries later it is still up, and still says why
        assert proc.poll() is None
        status, headers, ready = get_json(f"http://127.0.0.1:{port}/ready")
        assert status == 503
        assert headers["retry-after"] == "1"
        assert ready["ready"] is False
        assert ready["state"]["url"] == f"redis://:***@127.0.0.1:{closed}/0"
        assert ready["state"]["reason"].startswith("cannot reach Redis: ")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0
        assert "secret" not in err


def test_check_rejects_an_unknown_state_url(run: Run, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("tags:\n  dir: orgs\nstate:\n  url: mysql://db/0\n")
    (tmp_path / "orgs").mkdir()
    code, _, err = run("check", "--config", str(config))
    assert code == 2
    assert (
        f"{config}:4: state.url: unknown state URL scheme 'mysql': expected one of memory://, "
        "redis://, rediss://"
    ) in err


def test_state_settings_come_from_gateway_yaml_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "state:\n  url: redis://127.0.0.1:6399/2\n  ttl: {session: 60, events: 1.5}\n"
    )
    monkeypatch.delenv("GATEWAY_STATE_URL", raising=False)
    loaded = load_config(config)
    assert loaded.state_url == "redis://127.0.0.1:6399/2"
    assert loaded.state_ttls == TTLs(session=60, events=1.5)
    monkeypatch.setenv("GATEWAY_STATE_URL", "memory://")
    assert loaded.state_url == "memory://"


def test_a_ttl_must_be_positive(run: Run, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("tags:\n  dir: orgs\nstate:\n  ttl:\n    session: 0\n")
    (tmp_path / "orgs").mkdir()
    code, _, err = run("check", "--config", str(config))
    assert code == 2
    assert f"{config}:5: state.ttl.session:" in err


def test_a_setting_no_longer_used_still_loads_with_a_warning(run: Run, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("tags:\n  dir: orgs\nstate:\n  ttl:\n    tag_cache: 1800\n")
    (tmp_path / "orgs").mkdir()
    code, _, err = run("check", "--config", str(config))
    assert code == 0
    assert f"gateway: warning: {config}:5: state.ttl.tag_cache: no longer used" in err
    # A typo is still an unknown field.
    config.write_text("tags:\n  dir: orgs\nstate:\n  ttl:\n    sesion: 1\n")
    code, _, err = run("check", "--config", str(config))
    assert code == 2
    assert f"{config}:5: state.ttl.sesion: unknown field\n" in err


def _twins(tmp_path: Path) -> Path:
    """A gateway.yaml with two upstreams that offer the same tool and prompt names (no
    prefixes), resource URI and URI template: the project's echo server, twice."""
    (tmp_path / "orgs").mkdir()
    twin = (
        "    transport: stdio\n"
        f"    command: {sys.executable}\n"
        "    args: [-m, tests.upstreams.servers.echo, stdio]\n"
        f"    cwd: {ROOT}\n"
        f"    env: {{PYTHONPATH: {ROOT}}}\n"
        '    prefix: ""\n'
    )
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "auth:\n  dev: true\n"
        "  api_keys: [{user: ann, org: acme, key: twins-key-0123456789}]\n"
        f"upstreams:\n  one:\n{twin}  two:\n{twin}"
    )
    return config


@pytest.mark.parametrize(
    "command", [["serve", "--port", "0"], ["stdio", "--api-key", "twins-key-0123456789"]]
)
def test_upstreams_offering_one_name_or_uri_stop_start_up_in_one_message(
    tmp_path: Path, command: list[str]
) -> None:
    config = _twins(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *command, "--config", str(config)],
        cwd=ROOT,
        env={**clean_env(), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    who = "is offered by 'one' and 'two'"
    for clash in (
        "tool name 'echo'",
        "prompt name 'greet'",
        "resource 'echo://static'",
        "resource template 'echo://items/{id}'",
    ):
        assert f"{config}: upstreams: {clash} {who}" in done.stderr
    assert "cannot start: " in done.stderr
    assert done.stdout == ""
