"""The gateway's own tools as an upstream of the pool, over the in-process transport:
listed, judged and called like any other upstream's, under a prefix no other upstream
may take."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest

from gateway.errors import InvalidArguments, UnknownTool
from gateway.own_tools import TOOLS, OwnTool, own_upstream
from gateway.upstreams.catalog import build
from gateway.upstreams.config import StdioUpstream
from gateway.upstreams.definitions import DefinitionLedger
from gateway.upstreams.listing import Offer
from gateway.upstreams.pool import Pool
from gateway.upstreams.status import State
from gateway.upstreams.transports import InProcessTransport
from tests.conftest import ROOT
from tests.upstreams.calling import call
from tests.upstreams.helpers import config_errors, stdio, text

pytestmark = pytest.mark.anyio

RESERVED = "starts with 'gateway__', which is reserved for the gateway's own tools"


def impostor(**fields: object) -> StdioUpstream:
    """A real stdio upstream offering `gateway__ping`, `gateway__evil` and `honest`."""
    base: dict[str, object] = {
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-m", "tests.upstreams.servers.impostor"],
        "cwd": str(ROOT),
        "env": {"PYTHONPATH": str(ROOT)},
    }
    return StdioUpstream.model_validate({**base, **fields}, strict=False)


@asynccontextmanager
async def settled(pool: Pool) -> AsyncIterator[Pool]:
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(pool.run)
        with anyio.fail_after(20):
            await pool.settled()
        yield pool
        tasks.cancel_scope.cancel()


async def test_the_own_tools_are_an_upstream_like_any_other(tmp_path: Path) -> None:
    ledger = DefinitionLedger(tmp_path / "tool-definitions.json")
    async with settled(Pool({"echo": stdio()}, ledger, own=own_upstream())) as pool:
        own = pool.connections["gateway"]
        assert isinstance(own.transport, InProcessTransport)
        assert own.status.state is State.READY
        assert not own.calls_direct  # the SDK client over memory streams, no exchange
        entry = pool.catalog.tools["gateway__ping"]
        assert (entry.upstream, entry.tool.name, entry.repeatable) == ("gateway", "ping", True)
        assert "echo__echo" in pool.catalog.tools
        assert pool.catalog.problems == ()
        result = await call(pool, "gateway__ping", {})
        assert (text(result), result.structured_content) == ("pong", {"pong": True, "message": ""})
        result = await call(pool, "gateway__ping", {"message": "hi"})
        assert text(result) == "pong: hi"
        # Checked on the same road: its schema refuses what it does not declare.
        with pytest.raises(InvalidArguments, match="gateway__ping"):
            await call(pool, "gateway__ping", {"message": 5})
    # Judged by the same ledger as every upstream's tools.
    assert ledger.approved_definition("gateway", "ping") is not None


async def test_the_guard_checks_the_own_tools_too() -> None:
    broken = OwnTool(
        types.Tool(name="broken", input_schema={"type": "object", "$ref": "#/nowhere"}),
        TOOLS["ping"].handler,
    )
    own = own_upstream({**TOOLS, "broken": broken})
    async with settled(Pool({}, own=own)) as pool:
        assert list(pool.catalog.tools) == ["gateway__ping"]
        assert [p for p in pool.catalog.problems if "'broken' left out" in p]


async def test_an_upstream_passing_reserved_names_through_shadows_no_own_tool() -> None:
    pool = Pool({"impostor": impostor(prefix="")}, own=own_upstream())
    async with settled(pool):
        tools = pool.catalog.tools
        assert {name: e.upstream for name, e in tools.items()} == {
            "gateway__ping": "gateway",
            "honest": "impostor",
        }
        assert pool.catalog.clashes == ()  # not a clash, which would stop the gateway
        assert pool.catalog.problems == tuple(
            f"upstream 'impostor': tool {name!r} left out: {name!r} {RESERVED}"
            for name in ("gateway__ping", "gateway__evil")
        )
        assert text(await call(pool, "gateway__ping", {})) == "pong"
        with pytest.raises(UnknownTool):
            await call(pool, "gateway__evil", {})


async def test_reserved_names_are_left_out_with_no_own_tools_served() -> None:
    async with settled(Pool({"impostor": impostor(prefix="")})) as pool:
        assert list(pool.catalog.tools) == ["honest"]
        assert len(pool.catalog.problems) == 2


def test_any_prefix_that_makes_a_reserved_name_is_left_out() -> None:
    def tool(name: str) -> types.Tool:
        return types.Tool(name=name, input_schema={"type": "object"})

    prompt = types.Prompt(name="way__greet")
    offered: Mapping[str, tuple[str, Offer]] = {
        "gate": ("gate", Offer(tools=(tool("way__x"), tool("keeper")), prompts=(prompt,))),
        "gateway": ("gateway__", Offer(tools=(tool("x"),))),
    }
    catalog = build(1, offered)
    assert {name: e.upstream for name, e in catalog.tools.items()} == {
        "gatekeeper": "gate",
        "gateway__x": "gateway",
    }
    assert catalog.prompts == {}
    assert catalog.problems == (
        f"upstream 'gate': tool 'way__x' left out: 'gateway__x' {RESERVED}",
        f"upstream 'gate': prompt 'way__greet' left out: 'gateway__greet' {RESERVED}",
    )


@pytest.mark.parametrize(
    ("name", "fields", "message"),
    [
        (
            "gateway",
            {},
            "upstreams.gateway: upstream name 'gateway' is reserved for the gateway's own "
            "tools (prefix 'gateway__'); give this upstream another name",
        ),
        (
            "crm",
            {"prefix": "gateway__crm"},
            f"upstreams.crm.prefix: upstream 'crm': prefix 'gateway__crm' {RESERVED}; "
            "choose another prefix",
        ),
    ],
)
def test_a_pool_refuses_an_upstream_claiming_the_reserved_name_or_prefix(
    name: str, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        Pool({name: stdio(**fields)}, own=own_upstream())
    assert str(caught.value) == message


UPSTREAM = "    transport: stdio\n    command: uvx\n"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            "  gateway:\n" + UPSTREAM,
            "4: upstreams.gateway: upstream name 'gateway' is reserved for the gateway's own "
            "tools (prefix 'gateway__'); give this upstream another name",
        ),
        (  # the name alone is reserved: the audit log and the ledger know upstreams by it
            "  gateway:\n" + UPSTREAM + "    prefix: gw__\n",
            "4: upstreams.gateway: upstream name 'gateway' is reserved for the gateway's own "
            "tools (prefix 'gateway__'); give this upstream another name",
        ),
        (
            "  crm:\n" + UPSTREAM + "    prefix: gateway__x\n",
            f"7: upstreams.crm.prefix: upstream 'crm': prefix 'gateway__x' {RESERVED}; "
            "choose another prefix",
        ),
        (
            "  gateway__crm:\n" + UPSTREAM,
            f"4: upstreams.gateway__crm: upstream 'gateway__crm': its default prefix "
            f"'gateway__crm__' {RESERVED}; give it another name or a prefix",
        ),
    ],
)
def test_gateway_yaml_claiming_the_reserved_name_or_prefix_is_refused(
    tmp_path: Path, entry: str, expected: str
) -> None:
    text = "tags: {dir: orgs}\nupstreams:\n" + entry
    assert config_errors(tmp_path, "\n" + text) == [expected]


def test_gateway_yaml_cannot_configure_an_in_process_upstream(tmp_path: Path) -> None:
    assert config_errors(tmp_path, "upstreams:\n  mine:\n    transport: inprocess\n") == [
        "3: upstreams.mine.transport: expected one of 'stdio', 'streamable_http', 'sse' "
        "(got 'inprocess')"
    ]
