"""`gateway upstreams status` and `gateway upstreams import`: the MCP servers behind the
gateway."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

from ..errors import ConfigError
from ..settings import config_path, load_config
from ..upstreams.importer import merged_text, read_client_config, render, write_atomically
from .common import EXIT_OK, EXIT_UNHEALTHY, connected_pool


def status(args: argparse.Namespace) -> int:
    config = load_config(config_path(args.config))
    upstreams = config.settings.upstreams
    pool = connected_pool(upstreams)
    catalog = pool.catalog
    rows = []
    for name, state in pool.statuses().items():
        rows.append(
            {
                "upstream": name,
                "transport": pool.connections[name].config.transport,
                "state": state.state.value,
                "tools": sum(1 for e in catalog.tools.values() if e.upstream == name),
                "resources": sum(1 for e in catalog.resources.values() if e.upstream == name),
                "templates": sum(1 for e in catalog.templates if e.upstream == name),
                "prompts": sum(1 for e in catalog.prompts.values() if e.upstream == name),
                "error": state.error,
                "notes": list(pool.connections[name].notes),
            }
        )
    if args.json:
        print(json.dumps({"upstreams": rows, "problems": list(catalog.problems)}, indent=2))
    else:
        if not upstreams:
            print(f"no upstreams in {config.path}; the gateway's own tools only")
        for row in rows:
            error = f"  {row['error']}" if row["error"] else ""
            print(
                f"{row['upstream']:<20} {row['transport']:<16} {row['state']:<10} "
                f"{row['tools']:>4} tools {row['resources']:>4} resources "
                f"{row['templates']:>3} templates {row['prompts']:>3} prompts{error}"
            )
            for note in pool.connections[str(row["upstream"])].notes:
                print(f"{'':<20} note: {note}")
        for problem in catalog.problems:
            print(f"problem: {problem}")
    down = any(row["state"] not in ("ready", "disabled") for row in rows)
    return EXIT_UNHEALTHY if down or catalog.problems else EXIT_OK


def import_client_config(args: argparse.Namespace) -> int:
    imported = read_client_config(Path(args.file))
    for note in imported.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.print:
        print("upstreams:\n" + render(imported.entries), end="")
        return EXIT_OK
    path = config_path(args.config)
    text = merged_text(path, imported.entries)
    # Validated as the gateway will read it, beside the original, before replacing it.
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", suffix=".check", encoding="utf-8"
    ) as candidate:
        candidate.write(text)
        candidate.flush()
        try:
            load_config(Path(candidate.name))
        except ConfigError as exc:
            issues = [dataclasses.replace(i, file=str(path)) for i in exc.issues]
            raise ConfigError(issues) from exc
    write_atomically(path, text)
    names = ", ".join(imported.entries)
    print(f"added {len(imported.entries)} upstreams to {path}: {names}", file=sys.stderr)
    return EXIT_OK
