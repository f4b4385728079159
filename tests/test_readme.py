"""The README's examples are what a newcomer copies: every YAML block in it loads with the
gateway's own loaders, and its `tags why` and Inspector lines answer what it says.

A block is recognized by what it is: a gateway.yaml (its top-level keys are settings), a
tag file (`org`, `users`, `tags`), or an indented fragment of a tag's `payload`. A block
that is none of these fails the test, so that a new example is checked too.

What the README leaves out, the test fills in, and nothing else (PLACEHOLDERS, and the
files a gateway.yaml block names):
- `<64 hex>` is a key's sha256: any 64 hex digits;
- `, ...]` ends a list whose other items are left out: the list ends there;
- a tag's `includes` may name tags the example does not show: they are defined as empty
  shared function tags, beside the example's file;
- the PEM file an RS256 `jwt:` names is written, with a fresh public key.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.auth import Authenticator
from gateway.cli import main
from gateway.errors import ConfigError
from gateway.settings import Settings, load_config
from gateway.tags.loader import tagset_from_texts
from tests.conftest import DEMO_CONFIG, ROOT
from tests.helpers import clean_env, serving, why_config

README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
PLACEHOLDERS = {"<64 hex>": "a" * 64, ", ...]": "]"}
TAG_FILE_KEYS = {"org", "users", "tags"}
PAYLOAD_KEYS = {"meta", "config", "content"}


@dataclass(frozen=True)
class Block:
    language: str
    text: str
    line: int
    """Of the block's first line in README.md."""

    def __str__(self) -> str:
        return f"README.md:{self.line}"


def blocks(language: str) -> list[Block]:
    readme = README.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(readme):
        if match.group(1) == language:
            line = readme.count("\n", 0, match.start(2)) + 1
            found.append(Block(language, match.group(2), line))
    return found


def filled(text: str) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    return text


def kind_of(block: Block) -> str:
    if block.text[:1].isspace():
        return "payload fragment"
    data = yaml.safe_load(block.text)
    keys = set(data) if isinstance(data, dict) else set()
    if keys and keys <= set(Settings.model_fields):
        return "gateway.yaml"
    if keys and keys <= TAG_FILE_KEYS:
        return "tag file"
    raise AssertionError(
        f"{block}: a YAML block that is neither a gateway.yaml, a tag file nor a fragment "
        "of a tag's payload; teach tests/test_readme.py what it is"
    )


YAML_BLOCKS = blocks("yaml")


def test_the_readme_has_each_kind_of_yaml_block() -> None:
    kinds = {kind_of(block) for block in YAML_BLOCKS}
    assert kinds == {"gateway.yaml", "tag file", "payload fragment"}


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=str)
def test_a_yaml_block_of_the_readme_loads(block: Block, tmp_path: Path) -> None:
    kind = kind_of(block)
    try:
        if kind == "gateway.yaml":
            load_gateway_yaml(filled(block.text), tmp_path)
        elif kind == "tag file":
            load_tag_file(filled(block.text))
        else:
            load_payload_fragment(filled(block.text))
    except ConfigError as exc:
        pytest.fail(f"{block} ({kind}) does not load:\n{exc}")


def load_gateway_yaml(text: str, folder: Path) -> None:
    path = folder / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    data = yaml.safe_load(text)
    (folder / data.get("tags", {}).get("dir", "orgs")).mkdir()
    jwt = data.get("auth", {}).get("jwt") or {}
    if "public_key_file" in jwt:
        pem = folder / jwt["public_key_file"]
        pem.parent.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
        pem.write_bytes(
            key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    config = load_config(path)
    Authenticator(config.settings.auth, config.path.parent, str(config.path))
    assert main(["check", "--config", str(path)]) == 0


def load_tag_file(text: str) -> None:
    data = yaml.safe_load(text)
    org = data.get("org", "acme")
    defined = {tag["tag"] for tag in data.get("tags", [])}
    included = {
        name
        for tag in data.get("tags", [])
        for name in tag.get("payload", {}).get("meta", {}).get("includes", [])
    }
    stubs = [
        {"tag": name, "kind": "function", "payload": {"config": {"org_scope": [org]}}}
        for name in sorted(included - defined)
    ]
    texts = {f"{org}.yaml": text}
    if stubs:
        texts["_readme_stubs.yaml"] = yaml.safe_dump({"tags": stubs})
    tagset_from_texts(texts)


def load_payload_fragment(text: str) -> None:
    payload: dict[str, Any] = yaml.safe_load(textwrap.dedent(text))
    assert isinstance(payload, dict), payload
    assert set(payload) <= PAYLOAD_KEYS, payload
    kind = "flow" if isinstance(payload.get("content"), dict) else "role"
    tag = {"tag": "readme_example", "kind": kind, "payload": payload}
    tagset_from_texts({"acme.yaml": yaml.safe_dump({"org": "acme", "tags": [tag]})})


def test_the_readme_tags_why_example_answers_what_it_shows(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    shown = [b for b in blocks("sh") if "gateway tags why" in b.text]
    assert len(shown) == 1
    lines = shown[0].text.splitlines()
    start = next(i for i, line in enumerate(lines) if "gateway tags why" in line)
    command = shlex.split(lines[start])
    expected = []
    for line in lines[start + 1 :]:
        if not line.startswith("# "):
            break
        expected.append(line[2:])
    arguments = json.loads(command[command.index("--args") + 1])
    assert arguments["order_id"] in demo_orders()  # what the demo's refund tool can find
    # As on a fresh clone: a data directory no gateway run has written a ledger into.
    code = main([*command[1:], "--config", why_config(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1  # not permitted
    assert out.splitlines() == expected


def demo_orders() -> set[str]:
    spec = importlib.util.spec_from_file_location(
        "demo", DEMO_CONFIG.parent / "upstreams" / "demo.py"
    )
    assert spec is not None
    assert spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return set(demo.ORDERS)


def test_the_readmes_inspector_lines_do_what_they_say() -> None:
    """The README's Inspector commands, run as written (from the repository, the demo on
    a free port instead of 8080), against `gateway serve` on the demo config: alice's
    tools listed, the demo's agent session run, and its refund flow run as a tool."""
    if not (ROOT / ".cache" / "mcp-clients" / "node_modules" / ".bin" / "mcp-inspector").exists():
        pytest.skip("the Inspector is not installed: run scripts/ensure-mcp-clients")
    shown = [b for b in blocks("sh") if "mcp-inspector --cli" in b.text]
    lines = [
        next(
            line
            for line in b.text.replace("\\\n", " ").splitlines()
            if "mcp-inspector --cli" in line
        )
        for b in shown
    ]
    expected = {
        "tools/list": '"name": "payments__refund"',
        "run_session": '"status": "completed"',
        "gateway__flow__refund": '"output": "Refunded 10.0 USD for ORD-100001"',
    }
    assert sorted(key for key in expected for line in lines if key in line) == sorted(expected)
    gateway = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(DEMO_CONFIG)]
    with serving(gateway, clean_env()) as (_, port):
        for line in lines:
            done = subprocess.run(
                ["bash", "-c", line.replace("127.0.0.1:8080", f"127.0.0.1:{port}")],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            (said,) = [text for key, text in expected.items() if key in line]
            assert said in done.stdout, done.stdout


@pytest.mark.parametrize("block", [b for b in blocks("sh") if "gateway run " in b.text], ids=str)
def test_the_readmes_gateway_run_lines_do_what_they_say(block: Block) -> None:
    lines = block.text.strip().splitlines()
    command = ""
    while lines and (not command or command.endswith("\\")):  # a command goes on past a \
        command = command.removesuffix("\\") + lines.pop(0)
    said = lines
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=clean_env(),
    )
    assert done.returncode == 0, done.stderr
    shown = done.stderr.splitlines() + done.stdout.splitlines()
    for line in said:
        expected = line.removeprefix("# ")
        prefix = expected.removesuffix("...")
        assert any(got == expected or got.startswith(prefix) for got in shown), (expected, shown)
