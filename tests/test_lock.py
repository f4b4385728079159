"""The locks scripts/bootstrap installs from (requirements.lock, requirements-EXTRA.lock)
cover pyproject.toml, agree with each other, and pin `mcp` at pyproject's exact version;
and scripts/lockcheck.py, which bootstrap runs before installing, finds what they miss."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pip
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from scripts.lockcheck import pins, problems
from tests.conftest import ROOT

PYPROJECT = ROOT / "pyproject.toml"
PROJECT = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
BASE_LOCK = ROOT / "requirements.lock"
# bootstrap's naming: the base lock, and one for each extra.
LOCKS = [(BASE_LOCK, [])] + [
    (ROOT / f"requirements-{extra}.lock", [extra]) for extra in PROJECT["optional-dependencies"]
]


@pytest.mark.parametrize(("lock", "extras"), LOCKS, ids=[lock.name for lock, _ in LOCKS])
def test_each_lock_covers_pyproject(lock: Path, extras: list[str]) -> None:
    assert problems(lock, PYPROJECT, extras) == []


def test_mcp_is_pinned_at_pyprojects_exact_version() -> None:
    (mcp,) = [r for r in map(Requirement, PROJECT["dependencies"]) if r.name == "mcp"]
    (specifier,) = mcp.specifier
    assert specifier.operator == "=="
    assert "*" not in specifier.version
    for lock, _ in LOCKS:
        assert pins(lock)["mcp"] == Version(specifier.version), lock.name


def test_every_extras_lock_holds_the_base_pins() -> None:
    """What lets bootstrap take any extra's install as a base one."""
    base = pins(BASE_LOCK)
    for lock, _ in LOCKS:
        pinned = pins(lock)
        assert {name: pinned.get(name) for name in base} == base, lock.name


def pyproject(tmp_path: Path, dependencies: list[str], dev: list[str]) -> Path:
    path = tmp_path / "pyproject.toml"
    # A JSON list of strings is a TOML array.
    path.write_text(
        "[project]\n"
        'name = "probe"\n'
        f"dependencies = {json.dumps(dependencies)}\n"
        "[project.optional-dependencies]\n"
        f"dev = {json.dumps(dev)}\n",
        encoding="utf-8",
    )
    return path


def test_the_check_names_each_requirement_a_lock_misses(tmp_path: Path) -> None:
    base = pins(BASE_LOCK)
    dev = pins(ROOT / "requirements-dev.lock")
    edited = pyproject(
        tmp_path,
        [f"mcp>{base['mcp']}", "anyio", "not-in-the-lock>=1"],
        [f"pytest<{dev['pytest']}", "ruff"],
    )
    assert problems(BASE_LOCK, edited, []) == [
        f"requirements.lock pins mcp=={base['mcp']}; "
        f"[project] dependencies wants mcp>{base['mcp']}",
        "not-in-the-lock>=1 ([project] dependencies) is not pinned in requirements.lock",
    ]
    assert problems(ROOT / "requirements-dev.lock", edited, ["dev"]) == [
        f"requirements-dev.lock pins mcp=={base['mcp']}; "
        f"[project] dependencies wants mcp>{base['mcp']}",
        "not-in-the-lock>=1 ([project] dependencies) is not pinned in requirements-dev.lock",
        f"requirements-dev.lock pins pytest=={dev['pytest']}; "
        f"[project.optional-dependencies] dev wants pytest<{dev['pytest']}",
    ]
    # The dev extra's requirements are not the base lock's business, but it has no ruff.
    assert problems(BASE_LOCK, edited, ["dev"])[-1] == (
        "ruff ([project.optional-dependencies] dev) is not pinned in requirements.lock"
    )


def test_a_pin_whose_marker_fails_here_does_not_count(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text(
        "anyio==4.6.0 ; python_version < '3' \\\n    --hash=sha256:" + "0" * 64 + "\n"
        "# a comment\n"
        "mcp==2.3.0 ; python_version >= '3' \\\n    --hash=sha256:" + "1" * 64 + "\n",
        encoding="utf-8",
    )
    assert pins(lock) == {"mcp": Version("2.3.0")}


@pytest.mark.parametrize("line", ["mcp>=2.3", "mcp==2.*", "mcp"])
def test_a_lock_line_that_is_no_exact_pin_is_refused(tmp_path: Path, line: str) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"{line}\n", encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"requirements\.lock: mcp.* is not pinned as name==version"
    ):
        pins(lock)


def test_bootstrap_runs_the_check_on_pips_own_packaging(tmp_path: Path) -> None:
    """As scripts/bootstrap runs it, in a venv with nothing but pip: on pip's vendored
    copy of packaging, whose exit status stops the install."""
    vendored = Path(pip.__file__).parent / "_vendor"
    assert (vendored / "packaging").is_dir()
    env = {**os.environ, "PYTHONPATH": str(vendored)}
    check = [sys.executable, str(ROOT / "scripts" / "lockcheck.py"), str(BASE_LOCK)]

    done = subprocess.run(check, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr) == (0, "")

    edited = pyproject(tmp_path, ["not-in-the-lock>=1"], [])
    done = subprocess.run(
        [*check, "--pyproject", str(edited)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "lockcheck: requirements.lock does not cover pyproject.toml:",
        "  - not-in-the-lock>=1 ([project] dependencies) is not pinned in requirements.lock",
        "Run scripts/lock to regenerate the locks, and commit them.",
    ]


BUILD_LOCK = ROOT / "requirements-build.lock"


def test_the_build_lock_pins_pip_and_the_build_backend() -> None:
    """What bootstrap and the Dockerfile install before the package, which they build
    without isolation: so no pip nor hatchling comes from outside a lock."""
    assert problems(BUILD_LOCK, PYPROJECT, [], build=True) == []
    assert {"pip", "hatchling", "editables"} <= set(pins(BUILD_LOCK))


def test_the_build_lock_agrees_with_the_dev_lock() -> None:
    build, dev = pins(BUILD_LOCK), pins(ROOT / "requirements-dev.lock")
    assert {name: dev[name] for name in build if name in dev} == {
        name: version for name, version in build.items() if name in dev
    }


def test_the_build_check_names_a_backend_the_lock_misses(tmp_path: Path) -> None:
    hatchling = pins(BUILD_LOCK)["hatchling"]
    edited = tmp_path / "pyproject.toml"
    edited.write_text(
        f'[build-system]\nrequires = ["hatchling>{hatchling}", "flit-core"]\n', encoding="utf-8"
    )
    assert problems(BUILD_LOCK, edited, [], build=True) == [
        f"requirements-build.lock pins hatchling=={hatchling}; "
        f"[build-system] requires wants hatchling>{hatchling}",
        "flit-core ([build-system] requires) is not pinned in requirements-build.lock",
    ]
