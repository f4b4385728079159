"""What changes while clients are connected: tag edits tell exactly the clients whose view
changed; revoking a key ends its requests, open streams included."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import httpx2
import jwt
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.front.harness import ACME, KEYS, Gateway, gateway_yaml, key_entries, running_gateway
from tests.helpers import until

pytestmark = pytest.mark.anyio

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


class Inbox:
    def __init__(self) -> None:
        self.changed: list[str] = []

    async def __call__(self, message: object) -> None:
        if isinstance(
            message,
            types.ToolListChangedNotification
            | types.ResourceListChangedNotification
            | types.PromptListChangedNotification,
        ):
            self.changed.append(message.method)


async def test_a_tag_edit_tells_the_clients_whose_tools_changed_and_no_one_else(
    tmp_path: Path,
) -> None:
    async with running_gateway(tmp_path) as gateway:
        inboxes = {user: Inbox() for user in ("alice", "bob", "carol")}
        async with (
            gateway.client("alice", "legacy", message_handler=inboxes["alice"]) as alice,
            gateway.client("bob", "legacy", message_handler=inboxes["bob"]) as bob,
            gateway.client("carol", "legacy", message_handler=inboxes["carol"]) as carol,
        ):
            for client in (alice, bob, carol):
                await client.list_tools()
            await anyio.sleep(0.3)  # the clients open their standalone streams
            # bob (viewer) loses tiny__echo; alice and carol keep what they had.
            gateway.write_org("acme", ACME.replace('"echo__pid", "tiny__echo"', '"echo__pid"'))
            with anyio.fail_after(2):
                await until(lambda: bool(inboxes["bob"].changed), 2)
            # tiny offers no resources or prompts: only bob's tool list changed.
            assert inboxes["bob"].changed == ["notifications/tools/list_changed"]
            assert [t.name for t in (await bob.list_tools()).tools] == ["echo__pid"]
            await anyio.sleep(0.5)
            assert inboxes["alice"].changed == []
            assert inboxes["carol"].changed == []


async def test_a_modern_client_listening_hears_only_its_own_changes(tmp_path: Path) -> None:
    async with (
        running_gateway(tmp_path) as gateway,
        gateway.client("bob") as bob,
        gateway.client("carol") as carol,
    ):
        assert bob.protocol_version == "2026-07-28"
        async with (
            bob.listen(tools_list_changed=True) as bob_events,
            carol.listen(tools_list_changed=True) as carol_events,
        ):
            gateway.write_org("acme", ACME.replace('"echo__pid", "tiny__echo"', '"echo__pid"'))
            with anyio.fail_after(2):
                event = await bob_events.__anext__()
            assert type(event).__name__ == "ToolsListChanged"
            with anyio.move_on_after(0.5) as quiet:
                await carol_events.__anext__()
            assert quiet.cancel_called  # carol heard nothing


def _config_with_keys(gateway: Gateway, users: tuple[str, ...]) -> str:
    text = gateway.config.path.read_text()
    start = text.index("  api_keys:\n")
    end = text.index("upstreams:\n")
    kept = "".join(
        line + "\n"
        for line in key_entries().splitlines()
        if any(f"user: {user}," in line for user in users)
    )
    return text[:start] + "  api_keys:\n" + kept + text[end:]


async def test_a_revoked_key_stops_working_within_seconds_open_streams_too(
    tmp_path: Path,
) -> None:
    async with running_gateway(tmp_path) as gateway:
        alice = {"Authorization": f"Bearer {KEYS['alice']}"}
        async with httpx2.AsyncClient(headers=alice, timeout=10) as http:
            transport = streamable_http_client(gateway.url, http_client=http)
            async with gateway.client("bob") as bob:
                async with Client(transport, mode="legacy") as client:
                    await client.list_tools()
                    await anyio.sleep(0.3)  # its standalone GET stream is open now
                    live = gateway.app.state.mcp.live_requests
                    assert live >= 1
                    gateway.config.path.write_text(
                        _config_with_keys(gateway, ("bob", "carol")), encoding="utf-8"
                    )
                    await until(lambda: gateway.app.state.mcp.live_requests < live, 3)
                    response = await http.post(
                        gateway.url,
                        json={"jsonrpc": "2.0", "id": 9, "method": "ping"},
                        headers=HEADERS,
                    )
                    assert response.status_code == 401
                # bob's key was kept: his client goes on.
                assert [t.name for t in (await bob.list_tools()).tools] == [
                    "echo__pid",
                    "tiny__echo",
                ]


async def test_an_invalid_auth_edit_keeps_the_last_good_keys(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gateway:
        text = gateway.config.path.read_text()
        gateway.config.path.write_text(text.replace("api_keys:", "api_keyz:"), encoding="utf-8")
        await anyio.sleep(1.0)
        async with gateway.client("alice") as alice:
            assert (await alice.list_tools()).tools


async def test_a_jwt_caller_is_served_until_its_token_expires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GW_JWT_SECRET", "j" * 40)
    auth = "  jwt: {algorithm: HS256, secret_env: GW_JWT_SECRET, audience: mcp-gateway}\n"
    async with running_gateway(tmp_path, gateway_yaml(auth)) as gateway:
        # Made once the gateway is up, so that its 3 s start counting now.
        claims = {"sub": "carol", "org": "globex", "aud": "mcp-gateway", "exp": time.time() + 3}
        bearer = {"Authorization": f"Bearer {jwt.encode(claims, 'j' * 40, algorithm='HS256')}"}
        async with httpx2.AsyncClient(headers=bearer, timeout=10) as http:
            transport = streamable_http_client(gateway.url, http_client=http)
            async with Client(transport, mode="legacy") as client:
                assert [t.name for t in (await client.list_tools()).tools] == ["tiny__echo"]
                await anyio.sleep(0.3)
                assert gateway.app.state.mcp.live_requests >= 1  # the standalone stream
                await until(lambda: gateway.app.state.mcp.live_requests == 0, 6)
            response = await http.post(
                gateway.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=HEADERS
            )
    assert response.status_code == 401
    assert "the token has expired" in response.json()["error_description"]


async def test_an_upstream_change_tells_only_the_clients_who_see_it(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gateway:
        inboxes = {user: Inbox() for user in ("alice", "bob")}
        async with (
            gateway.client("alice", "legacy", message_handler=inboxes["alice"]) as alice,
            gateway.client("bob", "legacy", message_handler=inboxes["bob"]) as bob,
        ):
            await alice.list_tools()
            await bob.list_tools()
            await anyio.sleep(0.3)  # the clients open their standalone streams
            await alice.call_tool("echo__mutate", {})  # the upstream adds a tool, `added`
            await until(lambda: bool(inboxes["alice"].changed), 2)
            assert "echo__added" in [t.name for t in (await alice.list_tools()).tools]
            await anyio.sleep(0.5)
    assert inboxes["alice"].changed == ["notifications/tools/list_changed"]
    assert inboxes["bob"].changed == []  # echo__added is not bob's
