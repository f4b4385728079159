"""`gateway upstreams import`: a desktop client's servers into gateway.yaml, in place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.settings import load_config
from gateway.upstreams.config import HttpUpstream, StdioUpstream
from gateway.upstreams.importer import read_client_config
from tests.conftest import Run

CLAUDE = {
    "mcpServers": {
        "time": {"command": "uvx", "args": ["mcp-server-time"]},
        "github.com": {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-github"],
            "env": {"GITHUB_TOKEN": "${GITHUB_TOKEN}"},
            "cwd": "/srv",
        },
        "crm": {"url": "https://crm.internal/mcp", "headers": {"X-Key": "${CRM_KEY}"}},
        "legacy": {"type": "sse", "url": "http://127.0.0.1:9000/sse", "disabled": True},
        "notes": {"command": "notes-mcp", "autoApprove": ["read"]},
    }
}

GATEWAY_YAML = """\
# The demo gateway.
server:
  port: 8080   # the port

upstreams:
    # indented by four here
    files:
        transport: stdio
        command: files-mcp

# Where tags live.
tags:
  dir: orgs
"""


def client_file(tmp_path: Path, data: Any, name: str = "claude.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def gateway_yaml(tmp_path: Path, text: str = GATEWAY_YAML) -> Path:
    (tmp_path / "orgs").mkdir(exist_ok=True)
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_every_kind_of_server_becomes_an_upstream(tmp_path: Path) -> None:
    imported = read_client_config(client_file(tmp_path, CLAUDE))
    assert imported.entries == {
        "time": {"transport": "stdio", "command": "uvx", "args": ["mcp-server-time"]},
        "github-com": {
            "transport": "stdio",
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-github"],
            "env": {"GITHUB_TOKEN": "${GITHUB_TOKEN}"},
            "cwd": "/srv",
        },
        "crm": {
            "transport": "streamable_http",
            "url": "https://crm.internal/mcp",
            "headers": {"X-Key": "${CRM_KEY}"},
        },
        "legacy": {"transport": "sse", "url": "http://127.0.0.1:9000/sse", "enabled": False},
        "notes": {"transport": "stdio", "command": "notes-mcp"},
    }
    assert imported.notes == [
        "server 'github.com' is upstream 'github-com'",
        "server 'crm': no type given; taken as streamable_http (write transport: sse if it "
        "is an SSE server)",
        "server 'notes': key 'autoApprove' has no equivalent; left out",
        "env and headers were copied as they are: move secrets into the gateway's environment "
        "and write ${NAME} in their place",
    ]


def test_vs_code_servers_with_types(tmp_path: Path) -> None:
    data = {
        "servers": {
            "a": {"type": "stdio", "command": "a-mcp"},
            "b": {"type": "http", "url": "http://127.0.0.1:1/mcp"},
        }
    }
    imported = read_client_config(client_file(tmp_path, data))
    assert imported.entries["a"]["transport"] == "stdio"
    assert imported.entries["b"]["transport"] == "streamable_http"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected an object with 'mcpServers' (or 'servers')"),
        ({"mcpServers": {"x": {"args": []}}}, "server 'x': has neither 'command'"),
        ({"mcpServers": {"x": {"command": "c", "args": "a b"}}}, "server 'x': args must be"),
        ({"mcpServers": {"x": {"url": "http://h", "type": "ws"}}}, "server 'x': unknown type"),
        ({"mcpServers": {"a.b": {"command": "c"}, "a-b": {"command": "c"}}}, "two servers"),
    ],
)
def test_a_bad_client_file_is_refused(tmp_path: Path, data: Any, message: str) -> None:
    path = client_file(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        read_client_config(path)
    assert str(caught.value.issues[0]).startswith(f"{path}: {message}")


def test_not_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text("{mcpServers: nope")
    with pytest.raises(ConfigError, match="not JSON"):
        read_client_config(path)


def test_import_extends_the_section_in_place(run: Run, tmp_path: Path) -> None:
    config = gateway_yaml(tmp_path)
    code, _, err = run(
        "upstreams", "import", str(client_file(tmp_path, CLAUDE)), "--config", str(config)
    )
    assert code == 0, err
    assert "added 5 upstreams" in err
    assert "note: server 'github.com' is upstream 'github-com'" in err
    text = config.read_text()
    # Comments and layout kept; new entries at the section's own indentation.
    assert text.startswith(GATEWAY_YAML.split("# Where tags live.")[0].rstrip("\n"))
    assert "\n    time:\n        transport: stdio\n" in text
    assert text.endswith("\n# Where tags live.\ntags:\n  dir: orgs\n")
    upstreams = load_config(config).settings.upstreams
    assert list(upstreams) == ["files", "time", "github-com", "crm", "legacy", "notes"]
    assert isinstance(upstreams["crm"], HttpUpstream)
    assert isinstance(upstreams["github-com"], StdioUpstream)
    assert upstreams["github-com"].cwd == "/srv"


@pytest.mark.parametrize(
    "text",
    ["server: {port: 1}\n", "server: {port: 1}\nupstreams:\n", "", "upstreams:   # none yet\n"],
    ids=["no section", "empty section", "empty file", "empty with a comment"],
)
def test_import_creates_or_fills_the_section(run: Run, tmp_path: Path, text: str) -> None:
    config = gateway_yaml(tmp_path, text)
    data = {"mcpServers": {"time": {"command": "uvx", "args": ["mcp-server-time"]}}}
    code, _, err = run(
        "upstreams", "import", str(client_file(tmp_path, data)), "--config", str(config)
    )
    assert code == 0, err
    assert list(load_config(config).settings.upstreams) == ["time"]


def test_a_taken_name_changes_nothing(run: Run, tmp_path: Path) -> None:
    config = gateway_yaml(tmp_path)
    data = {"mcpServers": {"files": {"command": "other"}, "new": {"command": "n"}}}
    code, _, err = run(
        "upstreams", "import", str(client_file(tmp_path, data)), "--config", str(config)
    )
    assert code == 2
    assert f"{config}:7: upstreams.files: upstream 'files' exists already" in err
    assert config.read_text() == GATEWAY_YAML


def test_an_import_that_would_make_the_config_invalid_changes_nothing(
    run: Run, tmp_path: Path
) -> None:
    text = "upstreams:\n  a:\n    transport: stdio\n    command: a\n    prefix: x__\n"
    config = gateway_yaml(tmp_path, text)
    data = {"mcpServers": {"x": {"command": "x-mcp"}}}  # its default prefix is x__ too
    code, _, err = run(
        "upstreams", "import", str(client_file(tmp_path, data)), "--config", str(config)
    )
    assert code == 2
    assert f"{config}:" in err
    assert "prefix 'x__' is also upstream 'a''s" in err
    assert config.read_text() == text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_flow_style_section_is_not_rewritten(run: Run, tmp_path: Path) -> None:
    text = "upstreams: {a: {transport: stdio, command: a}}\n"
    config = gateway_yaml(tmp_path, text)
    data = {"mcpServers": {"x": {"command": "x-mcp"}}}
    code, _, err = run(
        "upstreams", "import", str(client_file(tmp_path, data)), "--config", str(config)
    )
    assert code == 2
    assert "upstreams is not a block mapping" in err
    assert config.read_text() == text


def test_print_writes_nothing(run: Run, tmp_path: Path) -> None:
    config = gateway_yaml(tmp_path)
    data = {"mcpServers": {"time": {"command": "uvx", "args": ["mcp-server-time"]}}}
    code, out, _ = run(
        "upstreams", "import", str(client_file(tmp_path, data)), "--config", str(config), "--print"
    )
    assert code == 0
    assert out == (
        "upstreams:\n  time:\n    transport: stdio\n    command: uvx\n    args:\n"
        "    - mcp-server-time\n"
    )
    assert config.read_text() == GATEWAY_YAML
