"""`gateway check`: validate gateway.yaml and every tag file it names."""

from __future__ import annotations

import argparse

from .common import EXIT_OK, open_config


def check(args: argparse.Namespace) -> int:
    config, manager = open_config(args)
    tagset = manager.tagset
    print(
        f"ok: {config.path} and {len(tagset.files)} tag files "
        f"({len(tagset.orgs)} orgs, {tagset.tag_count} tags)"
    )
    return EXIT_OK
