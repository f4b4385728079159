"""What the commands share: exit codes, usage errors, and opening the configuration."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..audit import AuditLog
from ..principal import Principal
from ..settings import GatewayConfig, config_path, load_config
from ..tags import TagManager
from ..upstreams.definitions import DefinitionLedger

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


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))
