from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.principal import Principal
from gateway.tags import TagSet
from gateway.tags.loader import tagset_from_texts

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "configs" / "gateway.yaml"


def tagset(**files: str) -> TagSet:
    """A TagSet from YAML texts keyed by file stem (`acme="..."` → acme.yaml)."""
    return tagset_from_texts(
        {f"{name}.yaml": textwrap.dedent(text) for name, text in files.items()}
    )


def who(user: str, org: str = "acme", *roles: str) -> Principal:
    return Principal(user_id=user, org_id=org, roles=roles)


@pytest.fixture
def tags_dir(tmp_path: Path) -> Callable[..., Path]:
    """Writes org files into a fresh directory and returns it."""
    directory = tmp_path / "orgs"
    directory.mkdir()

    def write(**files: str) -> Path:
        for name, text in files.items():
            (directory / f"{name}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
        return directory

    return write


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
