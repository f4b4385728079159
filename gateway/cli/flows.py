"""`gateway flows stats | candidates | export`: what runs of an org's flows did, and the
generated plans that completed often enough to be worth a flow tag, from the shared state
store (a gateway on memory:// keeps them in its own process)."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

import anyio
import yaml

from ..flows.learning import FlowStats, Learning
from ..settings import GatewayConfig
from ..tags.model import NAME_PATTERN
from .common import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_STARTUP,
    open_config,
    print_json,
    shared_store,
    shown,
    store_ready,
)


def stats(args: argparse.Namespace) -> int:
    config, _ = open_config(args)
    return anyio.run(_stats, config, args)


def candidates(args: argparse.Namespace) -> int:
    config, _ = open_config(args)
    return anyio.run(_candidates, config, args)


def export(args: argparse.Namespace) -> int:
    config, _ = open_config(args)
    return anyio.run(_export, config, args)


async def _stats(config: GatewayConfig, args: argparse.Namespace) -> int:
    async with shared_store(config) as store:
        if not await store_ready(store):
            return EXIT_STARTUP
        found = await Learning(store).stats(args.org, [args.flow] if args.flow else None)
    if args.json:
        print_json([flow.summary() for flow in found])
        return EXIT_OK
    if not found or all(flow.runs == 0 for flow in found):
        print(f"no runs recorded for {args.flow or 'any flow'} of org {args.org}")
        return EXIT_NOT_FOUND if args.flow else EXIT_OK
    for flow in found:
        _print_stats(flow)
    return EXIT_OK


def _print_stats(flow: FlowStats) -> None:
    summary = flow.summary()
    print(
        f"{flow.flow}: {flow.completed} of {flow.runs} runs completed, "
        f"p50 {_ms(summary['p50_ms'])}, p95 {_ms(summary['p95_ms'])}, "
        f"cost ${summary['cost_usd']:.4f}"
    )
    head = f"  {'STEP':<24} {'RUNS':>5} {'OK':>5} {'FAILED':>6} {'SKIPPED':>7} {'RETRIES':>7}"
    print(f"{head}  P50      P95")
    for sid, step in summary["steps"].items():
        print(
            f"  {sid:<24} {step['runs']:>5} {step['completed']:>5} {step['failed']:>6} "
            f"{step['skipped']:>7} {step['retries']:>7}  {_ms(step['p50_ms']):<8} "
            f"{_ms(step['p95_ms'])}"
        )
        for error in step["errors"]:
            print(f"    {error['count']}x {error['class']}: {shown(error['error'][:100])}")
    for note in flow.notes():
        print(f"  note: {note}")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


async def _candidates(config: GatewayConfig, args: argparse.Namespace) -> int:
    async with shared_store(config) as store:
        if not await store_ready(store):
            return EXIT_STARTUP
        found = await Learning(store).candidates(args.org)
    if args.json:
        print_json([{"id": shape, "count": count, **body} for shape, body, count in found])
        return EXIT_OK
    if not found:
        print(f"no candidate flows for org {args.org}")
        return EXIT_OK
    print(f"{'ID':<18} {'RUNS':>5}  TOOLS  (GOAL)")
    for shape, body, count in found:
        tools = " -> ".join(step["tool"] for step in body["steps"])
        goal = shown(str(body.get("goal", ""))[:60])
        print(f"{shape:<18} {count:>5}  {shown(tools)}  ({goal})")
    return EXIT_OK


async def _export(config: GatewayConfig, args: argparse.Namespace) -> int:
    async with shared_store(config) as store:
        if not await store_ready(store):
            return EXIT_STARTUP
        found = await Learning(store).candidates(args.org)
    for shape, body, count in found:
        if shape == args.id:
            print(
                yaml.safe_dump(
                    [flow_tag(args.name or f"flow_{shape}", body, count)], sort_keys=False
                ),
                end="",
            )
            return EXIT_OK
    print(f"gateway flows export: no candidate {args.id!r} for org {args.org}", file=sys.stderr)
    return EXIT_NOT_FOUND


def flow_tag(name: str, candidate: dict[str, Any], count: int) -> dict[str, Any]:
    """A candidate as a flow tag an admin can add to an org file's `tags` (and assign)."""
    if not re.match(NAME_PATTERN, name):
        raise SystemExit(f"gateway flows export: {name!r} is not a valid tag name")
    inputs = candidate.get("inputs") or {}
    properties = {field: {"type": spec["type"]} for field, spec in inputs.items()}
    goal = str(candidate.get("goal", ""))
    return {
        "tag": name,
        "kind": "flow",
        "payload": {
            "meta": {
                "title": name,
                "description": (
                    f"Learned from {count} completed runs of a generated plan. Its goal, as "
                    f"the model wrote it (review it before you assign this flow): {goal!r}"
                ),
            },
            "config": {"assigned_users": []},
            "content": {
                "inputs": {
                    "type": "object",
                    "properties": properties,
                    "required": sorted(properties),
                    "additionalProperties": False,
                },
                "steps": candidate["steps"],
            },
        },
    }
