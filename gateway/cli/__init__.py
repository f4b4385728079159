"""The `gateway` command: serve, check, explain tag resolution, and run agent sessions.

Exit codes: 0 success (for `tags why`: permitted), 1 `tags why`: not permitted,
`upstreams status`: an upstream is not well, `tools approve`: nothing to approve,
`sessions show`: no such session, `run`: the session did not complete;
2 invalid configuration or usage; 3 `serve`, `stdio`: the gateway could not start (it says
why in one message, e.g. two upstreams offering the same tool name), `sessions`: the state
store cannot be reached; with `--url` (`run`, `sessions`: through a gateway's session
API, remote.py and rest.py): 4 the gateway could not be reached or refused a request (its detail on
stderr), 5 `run`: the session did not end within --timeout (it was cancelled), 130 `run`:
interrupted by Ctrl-C (the session was cancelled).

Here: the argument parser and the dispatch. Each command is a function in the module of
its group (`serve.py`: serve and stdio; `keys.py`, `check.py`, `tags.py`, `upstreams.py`,
`tools.py`, `sessions.py`: sessions and run; `remote.py`: the same through a gateway's
API, with `--url`, over `rest.py`, its HTTP client); `common.py` holds what they share.
`main` is the package's one public name (the console script and `python -m gateway.cli`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ..errors import ConfigError
from ..settings import CONFIG_ENV, DEFAULT_CONFIG
from . import check, flows, keys, remote, serve, sessions, tags, tools, upstreams
from .common import EXIT_CONFIG, UsageError
from .serve import API_KEY_ENV

__all__ = ["main"]


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

    serve_cmd = with_config(commands.add_parser("serve", help="run the gateway"))
    serve_cmd.add_argument("--host", help="bind address (default from gateway.yaml: 127.0.0.1)")
    serve_cmd.add_argument("--port", type=int, help="port (default from gateway.yaml: 8080)")
    serve_cmd.set_defaults(handler=serve.serve)

    stdio_cmd = with_config(
        commands.add_parser(
            "stdio", help="serve MCP on stdin/stdout for one caller (for desktop clients)"
        )
    )
    stdio_cmd.add_argument(
        "--api-key",
        help=f"the caller's API key (default: ${API_KEY_ENV}); or name the caller with --user",
    )
    stdio_cmd.add_argument(
        "--user", help="a local single-user setup (needs auth.dev: true): the user to serve"
    )
    stdio_cmd.add_argument("--org", help="with --user: the user's org")
    stdio_cmd.add_argument("--roles", default="", help="with --user: comma-separated roles")
    stdio_cmd.set_defaults(handler=serve.stdio)

    keys_cmd = commands.add_parser("keys", help="API keys for gateway.yaml")
    key_commands = keys_cmd.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    new_key = key_commands.add_parser(
        "new", help="make a key; print it once, and the entry for auth.api_keys"
    )
    new_key.add_argument("--user", required=True)
    new_key.add_argument("--org", required=True)
    new_key.add_argument("--roles", default="", help="comma-separated (default: the org file's)")
    new_key.add_argument("--label", help="names the key in the audit log")
    new_key.set_defaults(handler=keys.new_key)
    hash_key = key_commands.add_parser("hash", help="print the sha256 of a key read from stdin")
    hash_key.set_defaults(handler=keys.hash_key)

    check_cmd = with_config(
        commands.add_parser("check", help="validate every config file; exit 2 if any is bad")
    )
    check_cmd.add_argument(
        "--upstreams",
        action="store_true",
        help="also connect to the upstreams and check every flow's steps against their tools",
    )
    check_cmd.set_defaults(handler=check.check)

    tags_cmd = commands.add_parser("tags", help="explain tag resolution")
    tag_commands = tags_cmd.add_subparsers(dest="tags_command", required=True, metavar="COMMAND")
    resolve = with_config(
        tag_commands.add_parser("resolve", help="what applies to a user, and why")
    )
    _principal_args(resolve)
    resolve.add_argument("--json", action="store_true", help="print JSON")
    resolve.set_defaults(handler=tags.resolve)

    why = with_config(
        tag_commands.add_parser("why", help="may a user call a tool (with these arguments)?")
    )
    _principal_args(why)
    why.add_argument("--tool", required=True, help="namespaced tool name, e.g. payments__refund")
    why.add_argument("--args", help="the call's arguments as a JSON object")
    why.add_argument("--json", action="store_true", help="print JSON")
    why.set_defaults(handler=tags.why)

    upstreams_cmd = commands.add_parser("upstreams", help="the MCP servers behind the gateway")
    upstream_commands = upstreams_cmd.add_subparsers(
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
    importing.set_defaults(handler=upstreams.import_client_config)

    status = with_config(
        upstream_commands.add_parser(
            "status",
            help="connect to every upstream once and say how each is; exit 1 if one is down",
        )
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=upstreams.status)

    tools_cmd = commands.add_parser("tools", help="upstream tools whose definitions changed")
    tool_commands = tools_cmd.add_subparsers(dest="tools_command", required=True, metavar="COMMAND")
    pending = with_config(
        tool_commands.add_parser("pending", help="changed definitions waiting for approval")
    )
    pending.add_argument("--json", action="store_true", help="print JSON")
    pending.set_defaults(handler=tools.pending)
    approve = with_config(
        tool_commands.add_parser("approve", help="let a quarantined tool's new definition through")
    )
    approve.add_argument("tool", help="the tool's public name, e.g. payments__refund")
    approve.add_argument("--upstream", help="the upstream, when the public name alone is ambiguous")
    approve.set_defaults(handler=tools.approve)

    sessions_cmd = commands.add_parser("sessions", help="agent sessions in the state store")
    session_commands = sessions_cmd.add_subparsers(
        dest="sessions_command", required=True, metavar="COMMAND"
    )
    listed = with_config(
        session_commands.add_parser(
            "list",
            help="the sessions, newest first (with --url: the API key's caller's, from a gateway)",
            epilog=SESSIONS_EPILOG,
        )
    )
    listed.add_argument("--state", help="only sessions in this state, e.g. input_required")
    listed.add_argument("--user", help="only this user's (not with --url)")
    listed.add_argument("--org", help="only this org's (not with --url)")
    listed.add_argument("--json", action="store_true", help="print JSON")
    _remote_args(listed)
    listed.set_defaults(handler=_either(remote.list_, sessions.list_))
    shown = with_config(
        session_commands.add_parser(
            "show",
            help="one session and its events (with --url: as a gateway's API shows it)",
            epilog=SESSIONS_EPILOG,
        )
    )
    shown.add_argument("session_id", help="the session's id, e.g. s_AbC...")
    shown.add_argument(
        "--events", type=int, help="events to show at most (default 1000; not with --url)"
    )
    shown.add_argument("--json", action="store_true", help="print JSON")
    _remote_args(shown)
    shown.set_defaults(handler=_either(remote.show, sessions.show))

    flows_cmd = commands.add_parser(
        "flows", help="what runs of an org's flows did, and candidate flows to adopt"
    )
    flow_commands = flows_cmd.add_subparsers(dest="flows_command", required=True, metavar="COMMAND")
    flow_stats = with_config(
        flow_commands.add_parser("stats", help="per flow and step: runs, failures, latency")
    )
    flow_stats.add_argument("flow", nargs="?", help="one flow (default: every flow with runs)")
    flow_stats.add_argument("--org", required=True)
    flow_stats.add_argument("--json", action="store_true", help="print JSON")
    flow_stats.set_defaults(handler=flows.stats)
    flow_candidates = with_config(
        flow_commands.add_parser(
            "candidates", help="generated plans that completed, by shape, with how often"
        )
    )
    flow_candidates.add_argument("--org", required=True)
    flow_candidates.add_argument("--json", action="store_true", help="print JSON")
    flow_candidates.set_defaults(handler=flows.candidates)
    flow_export = with_config(
        flow_commands.add_parser("export", help="a candidate as a flow tag (YAML) to adopt")
    )
    flow_export.add_argument("id", help="the candidate's id (gateway flows candidates)")
    flow_export.add_argument("--org", required=True)
    flow_export.add_argument("--name", help="the tag's name (default: flow_<id>)")
    flow_export.set_defaults(handler=flows.export)

    run_cmd = with_config(
        commands.add_parser(
            "run",
            help="run one agent session here, as a user (questions asked on the terminal); "
            "with --url, on a gateway through its session API",
            epilog=RUN_EPILOG,
        )
    )
    run_cmd.add_argument(
        "message", nargs="?", default="", help="what the session is to do (optional with --flow)"
    )
    run_cmd.add_argument("--flow", help="run this flow tag of the user's, step by step")
    run_cmd.add_argument(
        "--inputs", default="{}", help="with --flow: the flow's input, as a JSON object"
    )
    _principal_args(run_cmd, required=False)
    _remote_args(run_cmd)
    run_cmd.add_argument(
        "--timeout",
        type=float,
        help="with --url: seconds to wait for the session's end, time at a prompt excepted; "
        f"then it is cancelled (default: its wall_seconds budget + {remote.MARGIN:g})",
    )

    def run(args: argparse.Namespace) -> int:
        if args.url is not None:
            return remote.run(args)
        _remote_only(args)
        missing = [f"--{name}" for name in ("org", "user") if getattr(args, name) is None]
        if missing:  # what argparse says when they are required, as they are here
            run_cmd.error(f"the following arguments are required: {', '.join(missing)}")
        return sessions.run(args)

    run_cmd.set_defaults(handler=run)
    return parser


CALLER = (
    f"With --url, the caller is the one its API key names: --api-key, or ${API_KEY_ENV} "
    "(so that the key need not be on the command line); none for a gateway that lets "
    "loopback callers in without one."
)
RUN_EPILOG = CALLER + (
    " Exit codes with --url: 0 completed, 1 the session failed, was canceled or rejected "
    "(or stdin ended while it waits), 4 the gateway could not be reached or refused (its "
    "detail on stderr), 5 --timeout passed (the session is cancelled), 130 Ctrl-C (the "
    "session is cancelled)."
)
SESSIONS_EPILOG = CALLER + (
    " Exit codes with --url: 0 shown, 1 no such session (show), 4 the gateway could not be "
    "reached or refused (its detail on stderr)."
)


def _remote_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        help="a running gateway's base URL, e.g. http://127.0.0.1:8080 (its /mcp URL works "
        "too): ask its session API instead of a state store or an engine here",
    )
    p.add_argument("--api-key", help=f"with --url: the caller's API key (default: ${API_KEY_ENV})")


def _either(
    remote_handler: Callable[[argparse.Namespace], int],
    local_handler: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        if args.url is not None:
            return remote_handler(args)
        _remote_only(args)
        return local_handler(args)

    return handler


def _remote_only(args: argparse.Namespace) -> None:
    names = ("api_key", "timeout")
    given = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n, None) is not None]
    if given:
        raise UsageError(f"{', '.join(given)}: only with --url")


def _principal_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """`required` False: the command checks (gateway run: not with --url)."""
    needed = None if required else "required without --url"
    p.add_argument("--org", required=required, help=needed)
    p.add_argument("--user", required=required, help=needed)
    p.add_argument(
        "--roles",
        default="",
        help="comma-separated roles, as an identity provider would give them "
        "(default: the user's roles in the org file)",
    )
    p.add_argument("--intent", help="the intent to resolve for (narrows intent-bound tags)")
