"""`gateway serve` (HTTP) and `gateway stdio` (one caller on stdin/stdout): run the gateway."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys

import anyio

from ..auth import Authenticator, Credential
from ..errors import CannotStart, SdkMismatch, Unauthenticated
from ..principal import Principal
from .common import EXIT_CONFIG, EXIT_OK, EXIT_STARTUP, UsageError, open_config

API_KEY_ENV = "GATEWAY_API_KEY"


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ..api.streams import MAX_FRAME
    from ..app import ROUTES_SERVED, build_app
    from ..runtime import Runtime

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config, manager = open_config(args)
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
    config_ = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        # A WebSocket frame past the API's own limit is refused by the server before it
        # is buffered whole (uvicorn's default is 16 MiB).
        ws_max_size=MAX_FRAME * 2,
    )
    server_ = uvicorn.Server(config_)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it handled
        server_.run()
    return EXIT_OK if server_.started else EXIT_STARTUP  # start-up said why it failed


def stdio(args: argparse.Namespace) -> int:
    from ..front.stdio import serve_stdio
    from ..runtime import Runtime

    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config, manager = open_config(args)
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
