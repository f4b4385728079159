"""A whole gateway in the test process, serving /mcp on a free 127.0.0.1 port, in front of
real upstreams (the echo server and the standard-library `tiny` server over stdio)."""

from __future__ import annotations

import hashlib
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx2
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from starlette.applications import Starlette

from gateway.app import build_app
from gateway.runtime import Runtime, own_tools
from gateway.settings import GatewayConfig, load_config
from gateway.state import open_store
from gateway.tags import TagManager
from gateway.upstreams.config import InProcessUpstream
from gateway.upstreams.definitions import DefinitionLedger
from gateway.upstreams.pool import Pool
from tests.conftest import ROOT
from tests.helpers import until

KEYS = {
    "alice": "alice-key-0123456789abcdef",
    "bob": "bob-key-0123456789abcdef",
    "carol": "carol-key-0123456789abcdef",
}

ACME = """
users:
  alice: {roles: [support]}
  bob: {roles: [viewer]}
tags:
  - tag: acme
    kind: company
    payload:
      content: "Acme Corp: be polite."
      config: {assigned_users: ["*"]}
  - tag: support
    kind: role
    payload:
      content: "You help customers."
      config:
        assigned_roles: [support]
        allowed_tools: ["echo__*"]
        denied_tools: ["echo__crash"]
        scopes:
          echo__echo: {n: {max: 5}}
  - tag: viewer
    kind: role
    payload:
      config:
        assigned_roles: [viewer]
        allowed_tools: ["echo__pid", "tiny__echo"]
"""

GLOBEX = """
users:
  carol: {roles: [ops]}
tags:
  - tag: ops
    kind: role
    payload:
      config:
        assigned_roles: [ops]
        allowed_tools: ["tiny__*"]
"""


def key_entries() -> str:
    orgs = {"alice": "acme", "bob": "acme", "carol": "globex"}
    return "".join(
        f"    - {{user: {user}, org: {orgs[user]}, "
        f"sha256: {hashlib.sha256(key.encode()).hexdigest()}, label: {user}-laptop}}\n"
        for user, key in KEYS.items()
    )


def gateway_yaml(auth: str | None = None) -> str:
    python = sys.executable
    return (
        "tags: {dir: orgs, watch: true}\n"
        "auth:\n" + (auth if auth is not None else "  api_keys:\n" + key_entries()) + "upstreams:\n"
        "  echo:\n"
        "    transport: stdio\n"
        f"    command: {python}\n"
        "    args: [-m, tests.upstreams.servers.echo, stdio]\n"
        f"    cwd: {ROOT}\n"
        f"    env: {{PYTHONPATH: {ROOT}}}\n"
        "    call_timeout: 10\n"
        "  tiny:\n"
        "    transport: stdio\n"
        f"    command: {python}\n"
        "    args: [-m, bench.servers.tiny]\n"
        f"    cwd: {ROOT}\n"
        f"    env: {{PYTHONPATH: {ROOT}}}\n"
    )


@dataclass
class Gateway:
    url: str
    app: Starlette
    config: GatewayConfig
    tags_dir: Path

    @asynccontextmanager
    async def client(
        self, user: str | None = None, mode: str = "auto", **options: Any
    ) -> AsyncIterator[Client]:
        """A connected SDK client sending `user`'s key (none for None)."""
        headers = {"Authorization": f"Bearer {KEYS[user]}"} if user else {}
        async with httpx2.AsyncClient(headers=headers, timeout=10) as http:
            transport = streamable_http_client(self.url, http_client=http)
            async with Client(transport, mode=mode, **options) as client:
                yield client

    def write_org(self, org: str, text: str) -> None:
        (self.tags_dir / f"{org}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")


@asynccontextmanager
async def running_gateway(
    directory: Path,
    config_text: str | None = None,
    orgs: dict[str, str] | None = None,
    state_url: str = "memory://",
    upstream_direct_calls: bool | None = None,
    own: InProcessUpstream | Literal["gateway"] | None = None,
) -> AsyncIterator[Gateway]:
    """`upstream_direct_calls`: the upstream leg's switch (Pool's `direct_calls`), when
    it is to differ from the door's (`server.direct_calls`). `own`: the gateway's own
    tools (own_tools.py); "gateway": all of them, run_session on this gateway's engine,
    as `gateway serve` has them."""
    tags_dir = directory / "orgs"
    tags_dir.mkdir(exist_ok=True)
    for org, text in (orgs or {"acme": ACME, "globex": GLOBEX}).items():
        (tags_dir / f"{org}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    path = directory / "gateway.yaml"
    path.write_text(config_text if config_text is not None else gateway_yaml(), encoding="utf-8")
    config = load_config(path)
    tags = TagManager.open(config.tags_dir, directory)
    state = open_store(state_url, config.state_ttls, config.settings.state.stream_max_len)
    built: list[Runtime] = []
    pool = Pool(
        config.settings.upstreams,
        DefinitionLedger(config.definitions_path),
        direct_calls=config.settings.server.direct_calls
        if upstream_direct_calls is None
        else upstream_direct_calls,
        own=own_tools(tags, lambda: built[0], config.settings.engine) if own == "gateway" else own,
    )
    built.append(Runtime(config, tags, state, pool))
    app = build_app(built[0])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    stopped = anyio.Event()

    async def serve() -> None:
        try:
            await server.serve()
        finally:
            stopped.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(serve)
        await until(lambda: server.started, 30)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield Gateway(f"http://127.0.0.1:{port}/mcp", app, config, tags_dir)
        finally:
            # A clean shutdown also when the test failed (the failure would otherwise
            # cancel the server mid-way and leave its sockets to the garbage collector,
            # whose ResourceWarnings then fail whichever test runs next).
            server.should_exit = True
            with anyio.move_on_after(10, shield=True):
                await stopped.wait()
