"""A/B front benchmark: the gateway's CPU per proxied `tools/call` at two commits, side by
side in one run.

    bench/run ab --base REV [--head REV] [--rounds N] [--block CALLS] [--eras auto,legacy]

A is the gateway at `--base`, checked out into a throwaway `git worktree` under /tmp (removed
at the end, on failure and Ctrl-C too); B is this checkout's gateway, working tree included,
or `--head REV` from a second worktree. Both run as `gateway serve` (`python -m`-style, the
same venv python, `PYTHONPATH` and working directory at their own checkout; each child
prints the `gateway` package it imported, which must lie in its checkout) on the front
benchmark's config, in front of one shared upstream (`bench/servers/wide.py`), all on free
127.0.0.1 ports.

Per era of the SDK `Client` (`auto`: 2026-07-28; `legacy`: the handshake era) it opens one
client per gateway, warms both up, then runs `--rounds` rounds of one block of `--block`
calls of `up__echo` per side, one call after another, the order alternating round by round
(A B, B A, A B, ...: ABBA), so that a drift of the machine's speed hits both alike. Around
each block it reads the CPU time of the gateway and of the upstream (Linux's per-process
CPU clock, in nanoseconds, where /proc/<pid>/stat's 10 ms ticks would quantize a 1 s block
by ±1 %) and reports, per era: the median gateway CPU per call of A and of B, the B / A ratio
of those medians, the median and spread of the rounds' own B / A ratios, and the upstream's
CPU per call behind each (both should do the same work).

With `--meter instructions` both gateways run under Valgrind's callgrind (bench/callgrind.py)
and the figure compared is the number of instructions each executes per call, which the
machine's drifting speed does not move; blocks can then be small and few (`--rounds 4
--block 100`), as the gateways run some 50 times slower.

Exit 1 when, in either era, B / A of the medians is above 1.03 (B costs more than 3 % over
A), or when a call failed. This is not a test: the test suite never asserts on time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
from mcp import Client

from bench import callgrind
from bench.front_bench import (
    CALL_TOOLS,
    PYTHON,
    RESULTS,
    ROOT,
    TICKS_PER_S,
    Child,
    Children,
    Tally,
    Target,
    call_block,
    children,
    connect,
    cpu_ticks,
    machine,
    start_wide,
    wait_gateway,
    wait_listening,
    write_gateway,
)
from bench.measure import NS_PER_MS, NS_PER_S, figure, percentile

Era = Literal["auto", "legacy"]
ERAS: tuple[Era, ...] = ("auto", "legacy")
SIDES = ("A", "B")
RATIO_LIMIT = 1.03
UPSTREAM_DRIFT = 0.05
"""Beyond this, the upstream's CPU per call behind A and B differs enough to mention."""
WARMUP_CALLS = 100
BLOCK_PRIMER = 3
"""Uncounted calls just before each block, with `--meter instructions`."""
IDLE_SECONDS = 15.0
"""How long each gateway's idle rate of instructions is measured, with `--meter instructions`."""
BLOCK_SECONDS = 60.0
"""A block starts no call after this long, whatever its count (a bound, not a measure)."""

# The child's first line of output names the package it imported, so the report can show
# that A ran the base's code and not this checkout's (an editable install, a stray
# PYTHONPATH or the working directory could otherwise win).
LAUNCHER = (
    "import sys, gateway, gateway.cli; "
    "print('ab_bench: gateway package', gateway.__file__, flush=True); "
    "sys.argv[0] = 'gateway'; "
    "sys.exit(gateway.cli.main())"
)
PACKAGE_LINE = "ab_bench: gateway package "


# Revisions -----------------------------------------------------------------------------


def git(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip()


def resolve_rev(rev: str) -> str:
    try:
        return git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except RuntimeError:
        raise SystemExit(f"ab_bench: {rev!r} names no commit in {ROOT}") from None


@dataclass(frozen=True)
class Side:
    name: str
    root: Path
    """The checkout whose `gateway` package this side runs."""
    rev: str
    label: str
    """The short rev, with a note when the working tree's gateway/ differs from it."""


@contextmanager
def worktree(parent: Path, name: str, rev: str) -> Iterator[Path]:
    """A detached worktree of `rev` under `parent`, removed on the way out, failure or not."""
    path = parent / f"{name}-{rev[:9]}"
    git("worktree", "add", "--detach", "--quiet", str(path), rev)
    try:
        yield path
    finally:
        try:
            # --force: the gateway's imports left __pycache__ directories in it.
            git("worktree", "remove", "--force", str(path))
        except RuntimeError as exc:
            print(f"ab_bench: {exc}; removing {path} by hand", file=sys.stderr)
            shutil.rmtree(path, ignore_errors=True)
            git("worktree", "prune")


def this_checkout() -> Side:
    rev = git("rev-parse", "HEAD")
    changed = git("status", "--porcelain", "--untracked-files=no", "--", "gateway")
    label = rev[:9] + (" + uncommitted changes to gateway/" if changed else "")
    return Side("B", ROOT, rev, label)


@contextmanager
def checkouts(work: Path, base_rev: str, head_rev: str | None) -> Iterator[dict[str, Side]]:
    """A and B, each a checkout to run a gateway from."""
    with worktree(work, "A", base_rev) as base_root:
        base = Side("A", base_root, base_rev, base_rev[:9])
        if head_rev is None:
            yield {"A": base, "B": this_checkout()}
            return
        with worktree(work, "B", head_rev) as head_root:
            yield {"A": base, "B": Side("B", head_root, head_rev, head_rev[:9])}


# Gateways ------------------------------------------------------------------------------


def start_side(group: Children, side: Side, config: Path, counted: Path | None) -> Child:
    """`gateway serve` of `side`; under callgrind, dumping to `counted`, when given."""
    env = {**os.environ, "PYTHONPATH": str(side.root)}
    argv = [PYTHON, "-c", LAUNCHER, "serve", "--config", str(config), "--port", "{port}"]
    if counted is not None:
        env["PYTHONHASHSEED"] = "0"  # the same sets and dicts, so the same work, each run
        argv = [*callgrind.prefix(counted), *argv]
    return group.spawn(f"gateway-{side.name}", argv, env, side.root)


def imported_package(child: Child, side: Side) -> str:
    """The `gateway/__init__.py` the child imported, checked to be its side's own."""
    for line in child.log.read_text(errors="replace").splitlines():
        if line.startswith(PACKAGE_LINE):
            path = Path(line.removeprefix(PACKAGE_LINE).strip())
            if path.resolve().parent != (side.root / "gateway").resolve():
                raise RuntimeError(
                    f"gateway {side.name} imported {path}, not the package of its checkout "
                    f"{side.root} (rev {side.label})"
                )
            return str(path)
    raise RuntimeError(f"gateway {side.name} did not name its package:\n{child.tail()}")


# CPU -----------------------------------------------------------------------------------


def process_clock(pid: int) -> int:
    """Linux's CPU clock of a whole process, every thread included (ended ones too):
    CPUCLOCK_SCHED (2) of the process `pid`, clockid (~pid << 3) | 2."""
    return ((~pid) << 3) | 2


def cpu_ns(pid: int) -> int:
    try:
        return time.clock_gettime_ns(process_clock(pid))
    except OSError:
        return cpu_ticks(pid) * NS_PER_S // TICKS_PER_S


def clock_kind(pid: int) -> str:
    try:
        time.clock_gettime_ns(process_clock(pid))
    except OSError:
        return f"/proc/<pid>/stat ticks ({1000 // TICKS_PER_S} ms)"
    return "per-process CPU clock (ns)"


# Measurement ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    era: str
    round: int
    side: str
    position: int
    """0 when the block ran first in its round, 1 when second."""
    calls: int
    errors: int
    seconds: float
    gateway_cpu_ms: float
    """Per call, as every figure below."""
    upstream_cpu_ms: float
    client_cpu_ms: float
    p50_ms: float
    gateway_kinstr: float | None
    """Thousands of instructions, with `--meter instructions`."""


def order(round_index: int) -> tuple[str, str]:
    return ("A", "B") if round_index % 2 == 0 else ("B", "A")


async def measure_block(
    era: str,
    round_index: int,
    position: int,
    side: str,
    target: Target,
    client: Client,
    upstream_pid: int,
    calls: int,
    counter: callgrind.Counter | None,
) -> Block:
    assert target.pid is not None
    tally = Tally()
    if counter is not None:
        # Under Valgrind the other side's block outlasts the exchange's keep-alive, so
        # the first calls would count a new connection: made here, uncounted.
        await call_block(target, [client], BLOCK_PRIMER, BLOCK_SECONDS, Tally())
        # callgrind_control blocks for a moment: off the event loop, as the sleeps below.
        await anyio.to_thread.run_sync(counter.reset)  # the block's own count follows
    gateway_before, upstream_before = cpu_ns(target.pid), cpu_ns(upstream_pid)
    client_before = time.process_time_ns()
    await call_block(target, [client], calls, BLOCK_SECONDS, tally)
    client_after = time.process_time_ns()
    gateway_after, upstream_after = cpu_ns(target.pid), cpu_ns(upstream_pid)
    instructions = await anyio.to_thread.run_sync(counter.busy) if counter is not None else None
    if not tally.calls:
        raise RuntimeError(
            f"{era}: no call to gateway {side} succeeded in round {round_index + 1} "
            f"({tally.errors} failed)"
        )
    ordered = sorted(tally.latencies)
    return Block(
        era=era,
        round=round_index,
        side=side,
        position=position,
        calls=tally.calls,
        errors=tally.errors,
        seconds=tally.seconds,
        gateway_cpu_ms=(gateway_after - gateway_before) / tally.calls / NS_PER_MS,
        upstream_cpu_ms=(upstream_after - upstream_before) / tally.calls / NS_PER_MS,
        client_cpu_ms=(client_after - client_before) / tally.calls / NS_PER_MS,
        p50_ms=percentile(ordered, 0.5) / NS_PER_MS,
        gateway_kinstr=None if instructions is None else instructions / tally.calls / 1000,
    )


async def measure_era(
    era: Era,
    targets: dict[str, Target],
    upstream_pid: int,
    counted: dict[str, Path],
    args: argparse.Namespace,
) -> tuple[dict[str, str], list[Block]]:
    """The era's protocol per side, and its blocks in the order they ran. `counted` holds
    each side's callgrind directory with `--meter instructions`, else nothing."""
    counters: dict[str, callgrind.Counter] = {}
    for side, out in counted.items():
        pid = targets[side].pid
        if pid is None:
            raise RuntimeError(f"gateway {side} has no process id to count instructions of")
        counters[side] = callgrind.Counter(pid, out)
    blocks: list[Block] = []
    async with AsyncExitStack() as stack:
        clients: dict[str, Client] = {}
        protocols: dict[str, str] = {}
        for side in SIDES:
            client = await stack.enter_async_context(connect(targets[side], era))
            listed = await client.list_tools()
            if not any(tool.name == targets[side].tool for tool in listed.tools):
                raise RuntimeError(f"gateway {side} does not list {targets[side].tool}")
            clients[side] = client
            protocols[side] = str(client.protocol_version)
        for side in SIDES if args.warmup else ():
            warm = Tally()
            await call_block(targets[side], [clients[side]], args.warmup, BLOCK_SECONDS, warm)
            if warm.errors:
                raise RuntimeError(f"{era}: {warm.errors} warm-up calls to gateway {side} failed")
        for side, counter in counters.items():
            await anyio.to_thread.run_sync(counter.start)
            idle = await anyio.to_thread.run_sync(counter.measure_idle, IDLE_SECONDS)
            print(f"  {era}: gateway {side} idle: {idle / 1000:,.0f} k instructions/s", flush=True)
        for round_index in range(args.rounds):
            for position, side in enumerate(order(round_index)):
                blocks.append(
                    await measure_block(
                        era,
                        round_index,
                        position,
                        side,
                        targets[side],
                        clients[side],
                        upstream_pid,
                        args.block,
                        counters.get(side),
                    )
                )
        print(f"  {era}: {_progress(blocks, meter_key(args))}", flush=True)
    return protocols, blocks


def meter_key(args: argparse.Namespace) -> str:
    """The Block field the A/B compares."""
    return "gateway_kinstr" if args.meter == "instructions" else "gateway_cpu_ms"


METERED = {
    "gateway_cpu_ms": "gateway CPU per call, ms",
    "gateway_kinstr": "gateway instructions per call, thousands",
}


def _progress(blocks: Sequence[Block], key: str) -> str:
    medians = {
        side: statistics.median(getattr(b, key) for b in blocks if b.side == side) for side in SIDES
    }
    return (
        f"{len(blocks)} blocks; {METERED[key]}: A {figure(medians['A'])}, B {figure(medians['B'])}"
    )


async def measure(
    targets: dict[str, Target],
    upstream_pid: int,
    counted: dict[str, Path],
    args: argparse.Namespace,
) -> dict[str, tuple[dict[str, str], list[Block]]]:
    # A bound on everything, whatever hangs: each block stops starting calls after
    # BLOCK_SECONDS, and a call that hangs is cut by call_block's own bound.
    idle = 2 * (IDLE_SECONDS + callgrind.SETTLE_SECONDS) if args.meter == "instructions" else 0
    budget = len(args.eras) * (2 * (args.rounds + 1) * (BLOCK_SECONDS + 10) + 120 + idle)
    results: dict[str, tuple[dict[str, str], list[Block]]] = {}
    with anyio.fail_after(budget):
        for era in args.eras:
            results[era] = await measure_era(era, targets, upstream_pid, counted, args)
    return results


# Report --------------------------------------------------------------------------------


def _spread(values: Sequence[float]) -> str:
    if len(values) == 1:
        return figure(values[0])
    return f"{figure(statistics.median(values))} ({figure(min(values))}-{figure(max(values))})"


def summarize(blocks: Sequence[Block], metered: str) -> dict[str, Any]:
    """Medians, spreads and ratios; B / A and the verdict on the `metered` field."""
    by_side = {side: [b for b in blocks if b.side == side] for side in SIDES}
    keys = ["gateway_cpu_ms", "upstream_cpu_ms", "client_cpu_ms", "p50_ms"]
    if metered not in keys:
        keys.insert(0, metered)
    medians = {
        side: {key: statistics.median(getattr(b, key) for b in by_side[side]) for key in keys}
        for side in SIDES
    }
    rounds = sorted({b.round for b in blocks})
    pairs = [
        getattr(next(b for b in by_side["B"] if b.round == r), metered)
        / getattr(next(b for b in by_side["A"] if b.round == r), metered)
        for r in rounds
    ]
    ratio = medians["B"][metered] / medians["A"][metered]
    return {
        "medians": medians,
        "spread": {
            side: [
                min(getattr(b, metered) for b in by_side[side]),
                max(getattr(b, metered) for b in by_side[side]),
            ]
            for side in SIDES
        },
        "metered": METERED[metered],
        "ratio_of_medians": ratio,
        "pair_ratios": pairs,
        "pair_ratio_median": statistics.median(pairs),
        "upstream_ratio": medians["B"]["upstream_cpu_ms"] / medians["A"]["upstream_cpu_ms"],
        "calls": {side: sum(b.calls for b in by_side[side]) for side in SIDES},
        "errors": sum(b.errors for b in blocks),
        "met": ratio <= RATIO_LIMIT,
    }


def print_era(
    era: str,
    protocols: dict[str, str],
    blocks: Sequence[Block],
    summary: dict[str, Any],
    args: argparse.Namespace,
) -> None:
    medians = summary["medians"]
    print()
    print(
        f"era {era!r} (protocol: A {protocols['A']}, B {protocols['B']}); {args.rounds} "
        f"round{'s' if args.rounds > 1 else ''} of one block of {args.block} calls per side, "
        "ABBA; medians over the blocks (spread)"
    )
    print(f"  {'per call':<22} {'A':>24} {'B':>24} {'B / A':>8}")
    rows = (
        *(
            (("gateway k instructions", "gateway_kinstr"),)
            if "gateway_kinstr" in medians["A"]
            else ()
        ),
        ("gateway CPU, ms", "gateway_cpu_ms"),
        ("upstream CPU, ms", "upstream_cpu_ms"),
        ("load generator CPU, ms", "client_cpu_ms"),
        ("latency p50, ms", "p50_ms"),
    )
    for label, key in rows:
        values = {side: [getattr(b, key) for b in blocks if b.side == side] for side in SIDES}
        ratio = medians["B"][key] / medians["A"][key]
        print(f"  {label:<22} {_spread(values['A']):>24} {_spread(values['B']):>24} {ratio:>8.3f}")
    print(
        f"  B / A of the rounds' {summary['metered']}: median {_spread(summary['pair_ratios'])}; "
        f"rounds: {', '.join(f'{r:.3f}' for r in summary['pair_ratios'])}"
    )
    drift = summary["upstream_ratio"]
    if abs(drift - 1) > UPSTREAM_DRIFT:
        # The upstream answers the same call either way, so its cost per call should not
        # differ: when it does, the machine's speed changed between the blocks (or B
        # changed what the gateway asks of it), and the gateway's ratio carries that too.
        print(
            f"  note: the upstream's CPU per call differs by {drift - 1:+.1%} between A and B; "
            "the machine's speed moved, so read the gateway's ratio with it"
        )
    if summary["errors"]:
        print(f"  {summary['errors']} calls failed")


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


# Main ----------------------------------------------------------------------------------


@dataclass
class Run:
    meta: dict[str, Any]
    sides: dict[str, Side]
    packages: dict[str, str]
    """The `gateway/__init__.py` each side's child imported."""
    load_before: str
    load_after: str
    eras: dict[str, tuple[dict[str, str], list[Block]]]


def start_gateways(
    group: Children,
    work: Path,
    sides: dict[str, Side],
    upstream: Child,
    counted: dict[str, Path],
) -> tuple[dict[str, Target], dict[str, str]]:
    """Both gateways in front of `upstream`, ready (under callgrind where `counted` names
    a side's directory): the targets to call, and the package each one imported."""
    started: dict[str, Child] = {}
    keys: dict[str, str] = {}
    for name, side in sides.items():
        directory = work / f"gateway-{name}"
        issued = write_gateway(
            directory,
            {"up": upstream.port},
            [{"name": "bench_tools", "users": ["bench"], "allow": ["up__*"]}],
        )
        keys[name] = issued["bench"]
        started[name] = start_side(group, side, directory / "gateway.yaml", counted.get(name))
    # Two gateways importing at once on 2 cores; under Valgrind, some 10 times slower.
    deadline = time.monotonic() + (300 if counted else 90)
    for child in started.values():
        wait_gateway(child, 1, deadline)
    packages = {name: imported_package(started[name], side) for name, side in sides.items()}
    targets = {
        name: Target(
            child.name,
            f"http://127.0.0.1:{child.port}/mcp",
            "up__echo",
            {"Authorization": f"Bearer {keys[name]}"},
            child.pid,
        )
        for name, child in started.items()
    }
    return targets, packages


def run(args: argparse.Namespace) -> Run:
    base_rev = resolve_rev(args.base)
    head_rev = resolve_rev(args.head) if args.head else None
    meta = machine(None)
    meta.pop("peer")
    load_before = load_average()
    with (
        tempfile.TemporaryDirectory(prefix="ab-bench-") as tmp,
        checkouts(Path(tmp), base_rev, head_rev) as sides,
    ):
        work = Path(tmp)
        for side in sides.values():
            print(f"ab_bench: {side.name} = {side.label} ({side.root})", flush=True)
        print(
            f"ab_bench: {meta['cpus']} CPUs ({meta['cpu_model']}), Python {meta['python']}, "
            f"mcp {meta['mcp']}; load average before {load_before}",
            flush=True,
        )
        (work / "logs").mkdir()
        with children(work / "logs") as group:
            try:
                upstream = start_wide(group, "upstream", CALL_TOOLS)
                wait_listening(upstream, time.monotonic() + 60)
                counted = (
                    {name: work / f"callgrind-{name}" for name in sides}
                    if args.meter == "instructions"
                    else {}
                )
                targets, packages = start_gateways(group, work, sides, upstream, counted)
                for name, package in packages.items():
                    print(f"ab_bench: gateway {name} imported {package}", flush=True)
                print(f"ab_bench: CPU read by the {clock_kind(upstream.pid)}", flush=True)
                eras = anyio.run(measure, targets, upstream.pid, counted, args)
            except KeyboardInterrupt:
                raise
            except BaseException:
                for child in group.started:
                    print(f"  {child.name} log ({child.log}):\n{child.tail()}", file=sys.stderr)
                raise
    return Run(meta, sides, packages, load_before, load_average(), eras)


def report(done: Run, args: argparse.Namespace) -> bool:
    meta, sides = done.meta, done.sides
    print()
    print(
        f"A/B front benchmark: A = {sides['A'].label}, B = {sides['B'].label}; "
        f"{meta['cpus']} CPUs ({meta['cpu_model']}); load average before {done.load_before}, "
        f"after {done.load_after}"
    )
    summaries: dict[str, Any] = {}
    for era, (protocols, blocks) in done.eras.items():
        summaries[era] = summarize(blocks, meter_key(args))
        print_era(era, protocols, blocks, summaries[era], args)
    print()
    errors = sum(s["errors"] for s in summaries.values())
    for era, summary in summaries.items():
        print(
            f"{'met   ' if summary['met'] else 'MISSED'} {era}: {summary['metered']}, B / A of "
            f"the medians {summary['ratio_of_medians']:.3f} (limit {RATIO_LIMIT}); "
            f"median of the rounds' ratios {summary['pair_ratio_median']:.3f}"
        )
    if errors:
        print(f"MISSED {errors} tools/call failed (see the JSON for where)")
    passed = all(s["met"] for s in summaries.values()) and not errors
    result = {
        "benchmark": "ab_bench",
        **meta,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "sides": {
            name: {"rev": side.rev, "label": side.label, "package": done.packages[name]}
            for name, side in sides.items()
        },
        "load_average": {"before": done.load_before, "after": done.load_after},
        "rounds": args.rounds,
        "block": args.block,
        "warmup": args.warmup,
        "meter": args.meter,
        "eras": {
            era: {
                "protocol": protocols,
                "summary": summaries[era],
                "blocks": [asdict(block) for block in blocks],
            }
            for era, (protocols, blocks) in done.eras.items()
        },
        "pass": passed,
    }
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    path = RESULTS / f"ab_bench-{stamp}.json"
    path.write_text(json.dumps(result, indent=1, allow_nan=False, default=str))
    print(f"results: {path.relative_to(ROOT)}")
    return passed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.ab_bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--base", required=True, help="A: the commit to compare against")
    parser.add_argument(
        "--head", help="B: a commit to run from a worktree (default: this checkout as it is)"
    )
    parser.add_argument("--rounds", type=int, default=10, help="rounds of one block per side")
    parser.add_argument("--block", type=int, default=500, help="tools/call per block")
    parser.add_argument(
        "--warmup", type=int, default=WARMUP_CALLS, help="uncounted calls per side and era"
    )
    parser.add_argument(
        "--eras", default=",".join(ERAS), help="client modes, comma-separated: auto, legacy"
    )
    parser.add_argument(
        "--meter",
        choices=("clock", "instructions"),
        default="clock",
        help="what B / A compares: the gateways' CPU clock, or instructions under callgrind",
    )
    args = parser.parse_args(argv)
    eras = [era.strip() for era in args.eras.split(",") if era.strip()]
    if not eras or any(era not in ERAS for era in eras):
        parser.error(f"--eras takes {', '.join(ERAS)}, comma-separated")
    args.eras = eras
    if not 1 <= args.rounds <= 50:
        parser.error("--rounds must be 1 to 50")
    if not 10 <= args.block <= 100_000:
        parser.error("--block must be 10 to 100000 calls")
    if not 0 <= args.warmup <= 10_000:
        parser.error("--warmup must be 0 to 10000 calls")
    if args.meter == "instructions":
        try:
            callgrind.available()
        except callgrind.CallgrindMissing as exc:
            parser.error(str(exc))
    # A SIGTERM unwinds like Ctrl-C, so every child is reaped and the worktree removed.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        done = run(args)
    except KeyboardInterrupt:
        print("ab_bench: interrupted; every child reaped, the worktrees removed", file=sys.stderr)
        return 130
    return 0 if report(done, args) else 1


if __name__ == "__main__":
    sys.exit(main())
