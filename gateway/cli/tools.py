"""`gateway tools pending` and `gateway tools approve`: upstream tools whose definitions
changed and wait in quarantine."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from ..settings import config_path, load_config
from ..upstreams.config import public_prefix
from ..upstreams.definitions import short
from .common import EXIT_NOT_FOUND, EXIT_OK, UsageError, ledger, print_json


def pending(args: argparse.Namespace) -> int:
    config = load_config(config_path(args.config))
    upstreams = config.settings.upstreams
    rows: list[dict[str, Any]] = [
        {
            "tool": (
                public_prefix(p.upstream, upstreams[p.upstream]) if p.upstream in upstreams else ""
            )
            + p.tool,
            "upstream": p.upstream,
            "approved": p.approved,
            "pending": p.pending,
            "since": p.since,
            "definition": p.definition,
        }
        for p in ledger(config).pending()
    ]
    if args.json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        print("no tool definitions wait for approval")
    for row in rows:
        print(
            f"{row['tool']} (upstream {row['upstream']}): {short(row['approved'])} → "
            f"{short(row['pending'])}\n  new definition: "
            + json.dumps(row["definition"], ensure_ascii=False)
        )
    return EXIT_OK


def approve(args: argparse.Namespace) -> int:
    config = load_config(config_path(args.config))
    definitions = ledger(config)
    waiting = {(p.upstream, p.tool) for p in definitions.pending()}
    candidates = [
        (name, args.tool[len(prefix) :])
        for name, upstream in config.settings.upstreams.items()
        if (args.upstream is None or args.upstream == name)
        and args.tool.startswith(prefix := public_prefix(name, upstream))
        and (name, args.tool[len(prefix) :]) in waiting
    ]
    if not candidates:
        listed = ", ".join(f"{u}/{t}" for u, t in sorted(waiting)) or "none"
        print(
            f"gateway: no definition of {args.tool!r} waits for approval (waiting: {listed})",
            file=sys.stderr,
        )
        return EXIT_NOT_FOUND
    if len(candidates) > 1:
        names = ", ".join(name for name, _ in candidates)
        raise UsageError(f"{args.tool!r} could be a tool of {names}: say which with --upstream")
    upstream, tool = candidates[0]
    approved = definitions.approve(upstream, tool, by=getpass.getuser())
    print(
        f"approved {args.tool} (upstream {upstream}): {short(approved.pending)}; "
        "a running gateway lists it again"
    )
    return EXIT_OK
