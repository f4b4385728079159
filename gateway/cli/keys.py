"""`gateway keys new` and `gateway keys hash`: API keys for gateway.yaml."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from typing import Any

from ..auth import key_digest
from .common import EXIT_OK, UsageError


def new_key(args: argparse.Namespace) -> int:
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


def hash_key(_args: argparse.Namespace) -> int:
    key = sys.stdin.readline().strip()
    if not key:
        raise UsageError("give the key on standard input")
    print(key_digest(key))
    return EXIT_OK
