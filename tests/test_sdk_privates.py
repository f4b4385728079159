"""No private name of the `mcp` SDK is reached outside gateway/sdk_internals.py, where each
one is checked at start-up: no import from an underscored SDK module or of an underscored
SDK name, and no access of another object's attribute whose name is private in the SDK
(the gateway's own objects' privates are told apart by a short list, kept honest below)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import mcp
import mcp_types

from tests.conftest import ROOT

ADAPTER = ROOT / "gateway" / "sdk_internals.py"
OWN_PRIVATES_READ_ELSEWHERE = {"_loader", "_current", "_regexp"}
"""Underscored attributes of the gateway's own objects (or re2's) that another of its
modules reads, whose names the SDK happens to use too: tags/store.py's TagStore, and
linear_regex.py's RE2 adapter."""


def sdk_privates() -> set[str]:
    names: set[str] = set()
    for package in (mcp, mcp_types):
        assert package.__file__ is not None
        for path in Path(package.__file__).parent.rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            names.update(re.findall(r"\bself\.(_[a-z]\w*)", text))
            names.update(re.findall(r"^\s*(?:async )?def (_[a-z]\w*)", text, re.M))
            names.update(re.findall(r"^(_[a-z]\w*)\s*[:=]", text, re.M))
    return names


def reached(path: Path, privates: set[str]) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
            "mcp",
            "mcp_types",
        ):
            module = node.module or ""
            if any(part.startswith("_") for part in module.split(".")):
                found.append(f"{path.name}:{node.lineno}: from {module} import ...")
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"{path.name}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.Attribute) and node.attr in privates:
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls", "super"):
                continue
            if isinstance(base, ast.Call) and getattr(base.func, "id", None) == "super":
                continue
            if node.attr in OWN_PRIVATES_READ_ELSEWHERE:
                continue
            found.append(f"{path.name}:{node.lineno}: .{node.attr}")
    return found


def test_no_private_sdk_name_is_reached_outside_the_adapter() -> None:
    privates = sdk_privates()
    found = [
        hit
        for path in sorted((ROOT / "gateway").rglob("*.py"))
        if path != ADAPTER
        for hit in reached(path, privates)
    ]
    assert found == []


def test_the_scan_finds_what_the_adapter_reaches() -> None:
    # Guards the scan itself: the adapter's own reaches are found when it is scanned.
    hits = reached(ADAPTER, sdk_privates())
    assert any(".__" not in hit and "_connection" in hit for hit in hits), hits
    assert any("from mcp.shared._context_streams" in hit for hit in hits), hits
