"""Checks that a lock covers pyproject.toml: each requirement of `[project] dependencies`,
and of the extras named, is pinned in the lock with `==` at a version it allows.

    python scripts/lockcheck.py LOCK [EXTRA...]
    python scripts/lockcheck.py --build requirements-build.lock

With `--build` the lock is the one of what installing takes: pip, and each requirement of
pyproject's `[build-system] requires` (the build backend).

scripts/bootstrap runs it before installing from a lock: it installs the lock's pins, then
the package with `--no-deps`, so without this check a pyproject.toml edited since the last
`scripts/lock` would install what the lock says, silently. It prints what is not covered
and exits 1.

It needs only `packaging`, whose API has been stable for years: bootstrap runs it on the
copy pip carries, before anything else is installed.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def pins(lock: Path) -> dict[str, Version]:
    """The lock's `name==version` pins that apply to this interpreter (their markers hold).

    Lines are pip's requirements format as `uv pip compile` writes it: a pin, its marker and
    its `--hash` options, continued with backslashes; comments on lines of their own.
    """
    found: dict[str, Version] = {}
    text = lock.read_text(encoding="utf-8").replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        requirement = Requirement(line.split(" --", 1)[0])
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==" or "*" in specifiers[0].version:
            raise ValueError(f"{lock.name}: {requirement} is not pinned as name==version")
        if requirement.marker is None or requirement.marker.evaluate():
            found[canonicalize_name(requirement.name)] = Version(specifiers[0].version)
    return found


def wanted(pyproject: Path, extras: list[str]) -> list[tuple[str, Requirement]]:
    """Each requirement of pyproject's `[project]` for this interpreter, with where it is."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project")
    if not isinstance(project, dict):
        raise ValueError(f"{pyproject}: no [project] table")
    optional = project.get("optional-dependencies", {})
    lists = [("[project] dependencies", project.get("dependencies", []))]
    for extra in extras:
        if extra not in optional:
            raise ValueError(
                f"{pyproject.name}: no extra {extra!r} in [project.optional-dependencies]"
            )
        lists.append((f"[project.optional-dependencies] {extra}", optional[extra]))
    return [
        (where, requirement)
        for where, texts in lists
        for requirement in map(Requirement, texts)
        if requirement.marker is None or requirement.marker.evaluate()
    ]


def wanted_to_build(pyproject: Path) -> list[tuple[str, Requirement]]:
    """pip, and each requirement of pyproject's `[build-system]`, with where it is."""
    system = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("build-system")
    if not isinstance(system, dict):
        raise ValueError(f"{pyproject}: no [build-system] table")
    return [("what installs", Requirement("pip"))] + [
        ("[build-system] requires", Requirement(text)) for text in system.get("requires", [])
    ]


def problems(lock: Path, pyproject: Path, extras: list[str], build: bool = False) -> list[str]:
    """What of pyproject's requirements (and `extras`', or with `build` its build
    system's and pip) the lock does not satisfy."""
    pinned = pins(lock)
    found = []
    needed = wanted_to_build(pyproject) if build else wanted(pyproject, extras)
    for where, requirement in needed:
        version = pinned.get(canonicalize_name(requirement.name))
        if version is None:
            found.append(f"{requirement} ({where}) is not pinned in {lock.name}")
        elif not requirement.specifier.contains(version, prereleases=True):
            found.append(
                f"{lock.name} pins {requirement.name}=={version}; {where} wants {requirement}"
            )
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lock", type=Path)
    parser.add_argument("extras", nargs="*")
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument("--build", action="store_true", help="the lock of pip and the backend")
    args = parser.parse_args(argv)
    if args.build and args.extras:
        parser.error("--build takes no extras")
    try:
        found = problems(args.lock, args.pyproject, args.extras, args.build)
    except (OSError, ValueError) as error:
        print(f"lockcheck: {error}", file=sys.stderr)
        return 1
    if found:
        print(f"lockcheck: {args.lock.name} does not cover {args.pyproject.name}:", file=sys.stderr)
        for problem in found:
            print(f"  - {problem}", file=sys.stderr)
        print("Run scripts/lock to regenerate the locks, and commit them.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
