"""What the commands share: exit codes, usage errors, and opening the configuration."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any, Final

import anyio

from ..audit import AuditLog
from ..errors import ConfigError, ConfigIssue
from ..own_tools import own_upstream
from ..principal import Principal
from ..settings import GatewayConfig, config_path, load_config
from ..state import StateStore, open_store
from ..tags import TagManager
from ..upstreams.config import UpstreamConfig
from ..upstreams.definitions import DefinitionLedger
from ..upstreams.pool import Pool

EXIT_OK = 0
EXIT_NOT_PERMITTED = 1
EXIT_UNHEALTHY = 1
EXIT_NOT_FOUND = 1
EXIT_CONFIG = 2
EXIT_STARTUP = 3


class UsageError(Exception):
    """A command's arguments do not fit together: `main` reports it as argparse would."""


def open_config(args: argparse.Namespace) -> tuple[GatewayConfig, TagManager]:
    """The configuration `--config` names and its tags, with its warnings on stderr."""
    config = load_config(config_path(args.config))
    for note in config.notes:
        print(f"gateway: warning: {note}", file=sys.stderr)
    manager = TagManager.open(
        config.tags_dir, config.path.parent, cache_size=config.settings.tags.cache_size
    )
    return config, manager


def principal(args: argparse.Namespace) -> Principal:
    roles = tuple(r.strip() for r in args.roles.split(",") if r.strip())
    return Principal(user_id=args.user, org_id=args.org, roles=roles)


def ledger(config: GatewayConfig) -> DefinitionLedger:
    return DefinitionLedger(config.definitions_path, AuditLog(config.audit_path))


def connected_pool(upstreams: Mapping[str, UpstreamConfig]) -> Pool:
    """A pool of `upstreams` (and the gateway's own tools) after connecting to each once,
    as far as their init_timeout allows, and closed again: its catalog and statuses."""
    pool = Pool(upstreams, own=own_upstream())
    limit = max((u.init_timeout for u in upstreams.values()), default=1.0) + 5.0

    async def connect() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(pool.run)
            with anyio.move_on_after(limit):
                await pool.settled()
            tasks.cancel_scope.cancel()

    anyio.run(connect)
    return pool


READY_SECONDS: Final = 5.0


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def shared_store(config: GatewayConfig) -> StateStore:
    """The gateway's state store, read from here: a shared one (redis://) only."""
    if config.state_url.startswith("memory:"):
        problem = (
            "the state store is memory://, which lives in the gateway's own process: "
            "only a shared store (redis://) can be read from here"
        )
        raise ConfigError([ConfigIssue(str(config.path), problem, field="state.url")])
    try:
        return open_store(config.state_url, config.state_ttls, config.settings.state.stream_max_len)
    except ValueError as exc:
        raise ConfigError([ConfigIssue(str(config.path), str(exc), field="state.url")]) from exc


async def store_ready(store: StateStore) -> bool:
    """Whether `store` answers within READY_SECONDS (said on stderr when not)."""
    for _ in range(int(READY_SECONDS / 0.05)):
        if store.status().ready:
            return True
        await anyio.sleep(0.05)
    status = store.status()
    print(f"gateway: state store {status.url} unavailable: {status.reason}", file=sys.stderr)
    return False


def shown(text: Any) -> str:
    """Caller's or model's text, safe on the admin's terminal: control characters (escape
    sequences that could retitle, clear or write the clipboard) shown escaped."""
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text)
    )
