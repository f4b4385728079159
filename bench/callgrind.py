"""Instructions a process runs, counted by Valgrind's callgrind: a meter for the A/B
benchmark that the machine's speed does not move.

A CPU clock on a shared 2-core machine drifts by a few per cent between blocks (an A/A run
of the clock shows ±3 %), which is the size of the limit the A/B checks. The number of
instructions a gateway executes for the same calls hardly varies at all, whatever else
runs. The process runs under `valgrind --tool=callgrind` with instrumentation off (so
start-up costs only Valgrind's translation, about 7 s for the gateway's imports), and
`callgrind_control` switches counting on once the calls start and dumps the count around
each block (each dump resets it). Under instrumentation the gateway runs some 50 times
slower, so blocks are small.

What an idle gateway runs per second (its file watchers' and the server's timers) is
counted too, and a block under Valgrind lasts 50 times longer than without it, so that
idle work weighs 50 times more in a call's count, and a block's count varies with its wall
time (the machine's load). `Counter` measures the idle rate once, before the blocks, and
takes the idle work of the block's wall time off its count.

Needs `valgrind` (Debian: `apt-get install valgrind`) on PATH.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

SETTLE_SECONDS = 5.0
"""How long a process is left alone before its idle rate is measured."""
CONTROL_SECONDS = 30.0
"""A bound on one `callgrind_control` command (it answers in about 0.1 s)."""


class CallgrindMissing(RuntimeError):
    pass


def available() -> None:
    """Raise CallgrindMissing, saying what to install, unless valgrind is on PATH."""
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    if missing:
        raise CallgrindMissing(
            f"--meter instructions needs {' and '.join(missing)} on PATH "
            "(Debian/Ubuntu: apt-get install valgrind)"
        )


def prefix(out_dir: Path) -> list[str]:
    """The argv to put before a command to run it under callgrind, counting nothing yet;
    its dumps go to `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--dump-instr=no",
        "--compress-strings=no",
        f"--callgrind-out-file={out_dir / 'callgrind.out'}",
    ]


def _control(pid: int, *args: str) -> None:
    done = subprocess.run(
        ["callgrind_control", *args, str(pid)],
        capture_output=True,
        text=True,
        timeout=CONTROL_SECONDS,
        check=False,
    )
    if done.returncode != 0 or "OK" not in done.stdout:
        raise RuntimeError(
            f"callgrind_control {' '.join(args)} {pid} failed ({done.returncode}): "
            f"{(done.stdout + done.stderr).strip()}"
        )


class Counter:
    """Instructions of one process under callgrind, block by block."""

    def __init__(self, pid: int, out_dir: Path) -> None:
        self.pid = pid
        self.out_dir = out_dir
        self.idle_per_s = 0.0
        self._since = 0.0

    def start(self) -> None:
        """Count from now on."""
        _control(self.pid, "--instr=on")
        self.reset()

    def reset(self) -> None:
        dump(self.pid, self.out_dir)
        self._since = time.monotonic()

    def measure_idle(self, seconds: float, settle: float = SETTLE_SECONDS) -> float:
        """The process's instructions per second while it waits (nothing asked of it),
        once the work left over from what came before (`settle` seconds) is done."""
        time.sleep(settle)
        self.reset()
        time.sleep(seconds)
        count, elapsed = self.read()
        self.idle_per_s = count / elapsed
        return self.idle_per_s

    def read(self) -> tuple[int, float]:
        """The instructions and wall seconds since the last reset or read (which resets)."""
        count = dump(self.pid, self.out_dir)
        now = time.monotonic()
        elapsed, self._since = now - self._since, now
        return count, elapsed

    def busy(self) -> int:
        """`read`'s count less the idle work of its wall time: what was asked of it."""
        count, elapsed = self.read()
        return max(0, round(count - self.idle_per_s * elapsed))


def dump(pid: int, out_dir: Path) -> int:
    """Instructions the process ran since the last dump (or since counting started)."""
    before = set(out_dir.glob("callgrind.out.*"))
    _control(pid, "--dump")
    deadline = time.monotonic() + CONTROL_SECONDS
    while time.monotonic() < deadline:  # written by the process itself, maybe just after
        new = sorted(set(out_dir.glob("callgrind.out.*")) - before)
        if len(new) > 1:
            raise RuntimeError(f"callgrind wrote {len(new)} dumps to {out_dir}, expected one")
        if new:
            text = new[0].read_text(errors="replace")
            if "\ntotals:" in text:  # the last line: the file is complete
                break
        time.sleep(0.05)
    else:
        raise RuntimeError(f"callgrind wrote no complete dump to {out_dir}")
    for line in text.splitlines():
        if line.startswith("summary:"):
            new[0].unlink()  # some 100 KB each; only the count is kept
            return int(line.split()[1])
    raise RuntimeError(f"{new[0]} has no summary line")
