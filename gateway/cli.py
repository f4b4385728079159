"""The `gateway` command: serve, check, and explain tag resolution.

Exit codes: 0 success (for `tags why`: permitted), 1 `tags why`: not permitted,
`upstreams status`: an upstream is not well, `tools approve`: nothing to approve;
2 invalid configuration or usage; 3 `serve`, `stdio`: the gateway could not start (it says
why in one message, e.g. two upstreams offering the same tool name).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import getpass
import json
import logging
import os
import secrets
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from . import jsoncodec
from .audit import AuditLog
from .auth import Authenticator, Credential, key_digest
from .errors import CannotStart, ConfigError, GatewayError, SdkMismatch, Unauthenticated
from .own_tools import own_upstream
from .principal import Principal
from .settings import CONFIG_ENV, DEFAULT_CONFIG, GatewayConfig, config_path, load_config
from .tags import TagManager, check
from .tags.explain import context_json, context_text, decision_json, decision_text
from .tags.policy import Fill
from .upstreams.config import OWN_UPSTREAM, RESERVED_PREFIX, public_prefix
from .upstreams.defaults import with_defaults
from .upstreams.definitions import DefinitionLedger, short
from .upstreams.importer import merged_text, read_client_config, render, write_atomically
from .upstreams.pool import Pool
from .upstreams.schemas import problem as schema_problem

API_KEY_ENV = "GATEWAY_API_KEY"

EXIT_OK = 0
EXIT_NOT_PERMITTED = 1
EXIT_UNHEALTHY = 1
EXIT_NOT_FOUND = 1
EXIT_CONFIG = 2
EXIT_STARTUP = 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    except UsageError as exc:
        parser.error(str(exc))
    return result


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="MCP gateway with tag-based permissions."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config",
            help=f"gateway.yaml (default: ${CONFIG_ENV} or {DEFAULT_CONFIG})",
        )
        return p

    serve = with_config(commands.add_parser("serve", help="run the gateway"))
    serve.add_argument("--host", help="bind address (default from gateway.yaml: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default from gateway.yaml: 8080)")
    serve.set_defaults(handler=_serve)

    stdio = with_config(
        commands.add_parser(
            "stdio", help="serve MCP on stdin/stdout for one caller (for desktop clients)"
        )
    )
    stdio.add_argument(
        "--api-key",
        help=f"the caller's API key (default: ${API_KEY_ENV}); or name the caller with --user",
    )
    stdio.add_argument(
        "--user", help="a local single-user setup (needs auth.dev: true): the user to serve"
    )
    stdio.add_argument("--org", help="with --user: the user's org")
    stdio.add_argument("--roles", default="", help="with --user: comma-separated roles")
    stdio.set_defaults(handler=_stdio)

    keys = commands.add_parser("keys", help="API keys for gateway.yaml")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    new_key = key_commands.add_parser(
        "new", help="make a key; print it once, and the entry for auth.api_keys"
    )
    new_key.add_argument("--user", required=True)
    new_key.add_argument("--org", required=True)
    new_key.add_argument("--roles", default="", help="comma-separated (default: the org file's)")
    new_key.add_argument("--label", help="names the key in the audit log")
    new_key.set_defaults(handler=_new_key)
    hash_key = key_commands.add_parser("hash", help="print the sha256 of a key read from stdin")
    hash_key.set_defaults(handler=_hash_key)

    check_cmd = with_config(
        commands.add_parser("check", help="validate every config file; exit 2 if any is bad")
    )
    check_cmd.set_defaults(handler=_check)

    tags = commands.add_parser("tags", help="explain tag resolution")
    tag_commands = tags.add_subparsers(dest="tags_command", required=True, metavar="COMMAND")
    resolve = with_config(
        tag_commands.add_parser("resolve", help="what applies to a user, and why")
    )
    _principal_args(resolve)
    resolve.add_argument("--json", action="store_true", help="print JSON")
    resolve.set_defaults(handler=_resolve)

    why = with_config(
        tag_commands.add_parser("why", help="may a user call a tool (with these arguments)?")
    )
    _principal_args(why)
    why.add_argument("--tool", required=True, help="namespaced tool name, e.g. payments__refund")
    why.add_argument("--args", help="the call's arguments as a JSON object")
    why.add_argument("--json", action="store_true", help="print JSON")
    why.set_defaults(handler=_why)

    upstreams = commands.add_parser("upstreams", help="the MCP servers behind the gateway")
    upstream_commands = upstreams.add_subparsers(
        dest="upstreams_command", required=True, metavar="COMMAND"
    )
    importing = with_config(
        upstream_commands.add_parser(
            "import",
            help="add the servers of a desktop MCP client's JSON config (mcpServers) to "
            "gateway.yaml",
        )
    )
    importing.add_argument("file", help="e.g. claude_desktop_config.json")
    importing.add_argument(
        "--print", action="store_true", help="print the entries instead of writing them"
    )
    importing.set_defaults(handler=_import_upstreams)

    status = with_config(
        upstream_commands.add_parser(
            "status",
            help="connect to every upstream once and say how each is; exit 1 if one is down",
        )
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_upstreams_status)

    tools = commands.add_parser("tools", help="upstream tools whose definitions changed")
    tool_commands = tools.add_subparsers(dest="tools_command", required=True, metavar="COMMAND")
    pending = with_config(
        tool_commands.add_parser("pending", help="changed definitions waiting for approval")
    )
    pending.add_argument("--json", action="store_true", help="print JSON")
    pending.set_defaults(handler=_tools_pending)
    approve = with_config(
        tool_commands.add_parser("approve", help="let a quarantined tool's new definition through")
    )
    approve.add_argument("tool", help="the tool's public name, e.g. payments__refund")
    approve.add_argument("--upstream", help="the upstream, when the public name alone is ambiguous")
    approve.set_defaults(handler=_tools_approve)
    return parser


def _upstreams_status(args: argparse.Namespace) -> int:
    config = load_config(config_path(args.config))
    upstreams = config.settings.upstreams
    pool = Pool(upstreams, own=own_upstream())
    limit = max((u.init_timeout for u in upstreams.values()), default=1.0) + 5.0

    async def connect() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(pool.run)
            with anyio.move_on_after(limit):
                await pool.settled()
            tasks.cancel_scope.cancel()

    anyio.run(connect)
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


def _import_upstreams(args: argparse.Namespace) -> int:
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


def _ledger(config: GatewayConfig) -> DefinitionLedger:
    return DefinitionLedger(config.definitions_path, AuditLog(config.audit_path))


def _tools_pending(args: argparse.Namespace) -> int:
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
        for p in _ledger(config).pending()
    ]
    if args.json:
        _print_json(rows)
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


def _tools_approve(args: argparse.Namespace) -> int:
    config = load_config(config_path(args.config))
    ledger = _ledger(config)
    waiting = {(p.upstream, p.tool) for p in ledger.pending()}
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
    approved = ledger.approve(upstream, tool, by=getpass.getuser())
    print(
        f"approved {args.tool} (upstream {upstream}): {short(approved.pending)}; "
        "a running gateway lists it again"
    )
    return EXIT_OK


def _principal_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--org", required=True)
    p.add_argument("--user", required=True)
    p.add_argument(
        "--roles",
        default="",
        help="comma-separated roles, as an identity provider would give them "
        "(default: the user's roles in the org file)",
    )
    p.add_argument("--intent", help="the intent to resolve for (narrows intent-bound tags)")


def _open(args: argparse.Namespace) -> tuple[GatewayConfig, TagManager]:
    config = load_config(config_path(args.config))
    for note in config.notes:
        print(f"gateway: warning: {note}", file=sys.stderr)
    manager = TagManager.open(
        config.tags_dir, config.path.parent, cache_size=config.settings.tags.cache_size
    )
    return config, manager


def _principal(args: argparse.Namespace) -> Principal:
    roles = tuple(r.strip() for r in args.roles.split(",") if r.strip())
    return Principal(user_id=args.user, org_id=args.org, roles=roles)


def _check(args: argparse.Namespace) -> int:
    config, manager = _open(args)
    tagset = manager.tagset
    print(
        f"ok: {config.path} and {len(tagset.files)} tag files "
        f"({len(tagset.orgs)} orgs, {tagset.tag_count} tags)"
    )
    return EXIT_OK


def _resolve(args: argparse.Namespace) -> int:
    _, manager = _open(args)
    context = manager.resolve(_principal(args), args.intent)
    if args.json:
        _print_json(context_json(context))
    else:
        print(context_text(context))
    return EXIT_OK


def _why(args: argparse.Namespace) -> int:
    arguments: dict[str, Any] | None = None
    if args.args is not None:
        try:
            parsed = jsoncodec.loads(args.args)  # strict, as /mcp is: no NaN or Infinity
        except ValueError as exc:
            raise UsageError(f"--args is not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise UsageError("--args must be a JSON object, e.g. '{\"amount\": 250}'")
        arguments = parsed
    config, manager = _open(args)
    schema, where = _known_schema(config, args.tool)
    fill: Fill | None = None
    if schema is not None:
        fill = lambda paths, given: with_defaults(schema, given, paths)  # noqa: E731
    decision = check(manager.resolve(_principal(args), args.intent), args.tool, arguments, fill)
    if args.json:
        _print_json(
            {
                **decision_json(decision),
                "schema": where,
                "arguments": dict(decision.arguments) if decision.arguments is not None else None,
            }
        )
    else:
        print(decision_text(decision))
        print(f"inputSchema: {where}")
        if decision.arguments is not None and decision.arguments != arguments:
            print("sent as: " + json.dumps(decision.arguments, ensure_ascii=False))
    return EXIT_OK if decision.allowed else EXIT_NOT_PERMITTED


def _known_schema(config: GatewayConfig, tool: str) -> tuple[dict[str, Any] | None, str]:
    """The inputSchema `tool` had when the gateway last trusted its definition (recorded in
    tool-definitions.json), and how `tags why` says where it came from. Without it, an
    absent argument is taken to have no default, as the running gateway does for a tool
    it has not listed."""
    upstreams = config.settings.upstreams
    claims = sorted(
        [
            *((public_prefix(name, upstream), name) for name, upstream in upstreams.items()),
            (RESERVED_PREFIX, OWN_UPSTREAM),
        ],
        key=lambda claim: -len(claim[0]),
    )
    ledger = _ledger(config)
    for prefix, name in claims:
        if not tool.startswith(prefix):
            continue
        try:
            definition = ledger.approved_definition(name, tool[len(prefix) :])
        except GatewayError:
            return None, f"unknown ({config.definitions_path} cannot be read)"
        if definition is None:
            continue
        schema = definition.get("inputSchema")
        if isinstance(schema, dict) and schema_problem(schema) is None:
            return schema, f"as upstream {name!r} last listed it (its declared defaults apply)"
    return None, (
        "unknown (no upstream listing recorded yet): an absent argument is taken to have no default"
    )


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import ROUTES_SERVED, build_app
    from .runtime import Runtime

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config, manager = _open(args)
    server = config.settings.server
    host = args.host or server.host
    port = args.port if args.port is not None else server.port
    tagset = manager.tagset
    print(
        f"gateway: tag config version {tagset.version} from {config.tags_dir} "
        f"({len(tagset.orgs)} orgs, {tagset.tag_count} tags)"
        + ("; watching for changes" if config.settings.tags.watch else ""),
        file=sys.stderr,
    )
    print(f"gateway: serving {', '.join(ROUTES_SERVED)} on http://{host}:{port}", file=sys.stderr)
    runtime = Runtime.open(config, manager)
    print(f"gateway: state store {runtime.state.url}", file=sys.stderr)
    upstreams = config.settings.upstreams
    if upstreams:
        print(f"gateway: connecting upstreams {', '.join(upstreams)}", file=sys.stderr)
    try:
        app = build_app(runtime)
    except SdkMismatch as exc:
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    # No access log: a line per MCP message costs more CPU than proxying it (the audit
    # log records every tool call).
    config_ = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False)
    server_ = uvicorn.Server(config_)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it handled
        server_.run()
    return EXIT_OK if server_.started else EXIT_STARTUP  # start-up said why it failed


def _stdio(args: argparse.Namespace) -> int:
    from .front.stdio import serve_stdio
    from .runtime import Runtime

    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config, manager = _open(args)
    key = args.api_key or os.environ.get(API_KEY_ENV)
    if args.user or args.org:
        if key or not (args.user and args.org):
            raise UsageError("name the caller with --api-key, or with --user and --org")
        if not config.settings.auth.dev:
            # Without a credential anyone who can start the gateway could be any user of
            # any org: only a development config, as for plain keys, allows it.
            print(
                f"gateway stdio: --user and --org serve a caller without a credential, which "
                f"only a development config allows (auth.dev: true in {config.path}); "
                f"give the caller's key with --api-key or ${API_KEY_ENV}",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        roles = tuple(r.strip() for r in args.roles.split(",") if r.strip())
        caller = Credential(Principal(args.user, args.org, roles), "local", f"local:{args.user}")
    elif key:
        authenticator = Authenticator(config.settings.auth, config.path.parent, str(config.path))
        try:
            caller = authenticator.check(key)
        except Unauthenticated as exc:
            print(f"gateway stdio: {exc.reason}", file=sys.stderr)
            return EXIT_CONFIG
    else:
        raise UsageError(f"name the caller with --api-key (or ${API_KEY_ENV}), or --user and --org")
    runtime = Runtime.open(config, manager)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            anyio.run(serve_stdio, runtime, caller)
    except (CannotStart, SdkMismatch) as exc:
        print(f"gateway stdio: cannot start: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    return EXIT_OK


def _new_key(args: argparse.Namespace) -> int:
    key = secrets.token_urlsafe(32)
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    entry: dict[str, Any] = {"user": args.user, "org": args.org}
    if roles:
        entry["roles"] = roles
    entry["sha256"] = key_digest(key)
    if args.label:
        entry["label"] = args.label
    print(f"key (shown once; give it to {args.user}): {key}")
    print("add under auth.api_keys in gateway.yaml:")
    print("  - " + json.dumps(entry))
    return EXIT_OK


def _hash_key(_args: argparse.Namespace) -> int:
    key = sys.stdin.readline().strip()
    if not key:
        raise UsageError("give the key on standard input")
    print(key_digest(key))
    return EXIT_OK


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
