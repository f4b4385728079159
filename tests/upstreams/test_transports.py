"""Each upstream's transport, chosen once by its config, and what each says about its
connection: whether it starts a process, tells calls apart, may send calls direct."""

from __future__ import annotations

import anyio
import pytest

from gateway.own_tools import own_upstream
from gateway.upstreams.config import HttpUpstream, MissingVariable, UpstreamConfig
from gateway.upstreams.exchange import Exchange
from gateway.upstreams.transports import (
    InProcessTransport,
    SseTransport,
    StdioTransport,
    StreamableHttpTransport,
    transport_for,
)
from tests.upstreams.helpers import stdio

pytestmark = pytest.mark.anyio

MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"


def http(transport: str, **fields: object) -> HttpUpstream:
    return HttpUpstream.model_validate(
        {"transport": transport, "url": "http://127.0.0.1:9/mcp", **fields}, strict=False
    )


def test_each_config_gets_its_transport() -> None:
    configs: dict[str, UpstreamConfig] = {
        "child": stdio(),
        "web": http("streamable_http"),
        "old": http("sse"),
        "own": own_upstream(),
    }
    chosen = {name: transport_for(name, config) for name, config in configs.items()}
    assert {name: type(t) for name, t in chosen.items()} == {
        "child": StdioTransport,
        "web": StreamableHttpTransport,
        "old": SseTransport,
        "own": InProcessTransport,
    }
    assert all(t.name == name for name, t in chosen.items())
    # Only children are started a few at a time.
    assert [n for n, t in chosen.items() if t.starts_process] == ["child"]
    # Only streamable HTTP runs a handshake-era call's messages in the call's context.
    assert [n for n, t in chosen.items() if t.tells_calls_apart] == ["web"]


async def test_only_a_2026_streamable_http_upstream_takes_calls_direct() -> None:
    plain, rooted = http("streamable_http"), http("streamable_http", roots=["/srv/docs"])
    assert transport_for("web", plain).exchange(HANDSHAKE) is None
    assert transport_for("web", plain).exchange(None) is None
    others: dict[str, UpstreamConfig] = {
        "child": stdio(),
        "old": http("sse"),
        "own": own_upstream(),
    }
    for name, config in others.items():
        assert transport_for(name, config).exchange(MODERN) is None
    exchanges = [transport_for("web", config).exchange(MODERN) for config in (plain, rooted)]
    try:
        assert all(isinstance(e, Exchange) for e in exchanges)
        assert [e.upstream for e in exchanges if e] == ["web", "web"]
        # Roots are declared only where configured, as the SDK client declares them.
        declared = [e._capabilities for e in exchanges if e]
        assert ["roots" in capabilities for capabilities in declared] == [False, True]
    finally:
        for exchange in exchanges:
            if exchange is not None:
                await exchange.aclose()


@pytest.mark.parametrize("transport", ["streamable_http", "sse"])
async def test_headers_are_expanded_when_connecting(
    transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GATEWAY_TEST_UNSET_TOKEN", raising=False)
    config = http(transport, headers={"Authorization": "Bearer ${GATEWAY_TEST_UNSET_TOKEN}"})
    chosen = transport_for("crm", config)  # choosing expands nothing
    with pytest.raises(MissingVariable) as caught, anyio.fail_after(5):
        async with chosen.open({}):
            pass
    assert str(caught.value) == (
        "upstream 'crm': header Authorization refers to ${GATEWAY_TEST_UNSET_TOKEN}, "
        "which is not set in the gateway's environment"
    )


async def test_stdio_env_is_expanded_when_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_TEST_UNSET_TZ", raising=False)
    chosen = transport_for("child", stdio(env={"TZ": "${GATEWAY_TEST_UNSET_TZ}"}))
    with (
        pytest.raises(MissingVariable, match=r"env TZ refers to \$\{GATEWAY_TEST_UNSET_TZ\}"),
        anyio.fail_after(5),
    ):
        async with chosen.open({}):
            pass
