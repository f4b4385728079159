from __future__ import annotations

import io
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from gateway.cli import main
from gateway.principal import Principal
from gateway.tags import TagSet
from gateway.tags.loader import tagset_from_texts
from tests.redis_server import RedisServer, running

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


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A redis-server of our own on a free loopback port, never the shared one on 6379:
    the tests flush it."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    with running(server):
        yield server.port


@pytest.fixture
def redis_url(redis_port: int) -> str:
    """The private server's URL, its database emptied: each test starts from nothing."""
    with redis.Redis(host="127.0.0.1", port=redis_port, db=0) as client:
        client.flushdb()
    return f"redis://127.0.0.1:{redis_port}/0"


Run = Callable[..., tuple[int, str, str]]
"""The `run` fixture: `gateway ARGV...` in this process."""


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """`gateway ARGV...` in this process: its exit code, stdout and stderr; `stdin` is
    what it reads."""

    def invoke(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse errors
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke
