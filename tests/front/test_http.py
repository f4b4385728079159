"""/mcp: who may connect, what each caller sees, and every call checked again."""

from __future__ import annotations

import json
import warnings

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import MCPError
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.shared.subscriptions import ResourceUpdated

from gateway.auth import Credential
from gateway.front.caller import current_credential
from gateway.front.http import McpRequest
from gateway.principal import Principal
from tests.front.harness import KEYS, Gateway
from tests.front.helpers import MODES, audit_events
from tests.helpers import until
from tests.upstreams.helpers import text

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("mode", MODES)
async def test_each_caller_sees_what_its_tags_grant(gateway: Gateway, mode: str) -> None:
    seen = {}
    for user in ("alice", "bob", "carol"):
        async with gateway.client(user, mode) as client:
            seen[user] = [tool.name for tool in (await client.list_tools()).tools]
            if mode == "legacy":
                assert client.protocol_version == "2025-11-25"
    expected_alice = [
        f"echo__{name}"
        for name in sorted(
            [
                "echo",
                "ask",
                "confirm",
                "sleep",
                "pid",
                "mutate",
                "cancelled",
                "reject",
                "lookup",
                "pay",
            ]
        )
    ]
    assert seen == {
        "alice": expected_alice,  # echo__* less the denied echo__crash
        "bob": ["echo__pid", "tiny__echo"],  # same org, another role
        "carol": ["tiny__echo"],  # another org
    }


async def test_listed_tools_keep_the_upstream_schema_and_annotations(gateway: Gateway) -> None:
    async with gateway.client("alice") as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    lookup = tools["echo__lookup"]
    assert lookup.annotations is not None
    assert lookup.annotations.idempotent_hint is True
    assert lookup.input_schema["properties"] == {"journal": {"type": "string"}}
    assert tools["echo__echo"].description == "Echo the arguments"


@pytest.mark.parametrize("mode", MODES)
async def test_a_permitted_call_returns_the_upstream_result(gateway: Gateway, mode: str) -> None:
    async with gateway.client("alice", mode) as client:
        await client.list_tools()
        result = await client.call_tool("echo__echo", {"n": 3})
    assert text(result) == "[('n', 3)]"
    assert result.structured_content == {"n": 3}
    assert not result.is_error
    stamp = (result.meta or {}).get(types.SERVER_INFO_META_KEY)
    assert stamp is None or stamp["name"] == "mcp-tag-gateway"  # never the upstream's


@pytest.mark.parametrize("mode", MODES)
async def test_a_forbidden_tool_is_answered_as_an_unknown_one(gateway: Gateway, mode: str) -> None:
    async with gateway.client("bob", mode) as client:
        await client.list_tools()
        errors = {}
        for name in ("echo__echo", "echo__crash", "nosuch__tool"):
            with pytest.raises(MCPError) as caught:
                await client.call_tool(name, {})
            errors[name] = (caught.value.error.code, caught.value.error.message)
    assert errors == {
        name: (types.INVALID_PARAMS, f"Unknown tool: {name}")
        for name in ("echo__echo", "echo__crash", "nosuch__tool")
    }


@pytest.mark.parametrize("mode", MODES)
async def test_out_of_scope_arguments_are_a_tool_error_with_the_reason(
    gateway: Gateway, mode: str
) -> None:
    async with gateway.client("alice", mode) as client:
        await client.list_tools()
        result = await client.call_tool("echo__echo", {"n": 50})
    assert result.is_error
    assert text(result) == "echo__echo: not permitted: n 50 exceeds max 5 set by tag support"


async def test_every_decision_is_audited_without_the_arguments(gateway: Gateway) -> None:
    before = len(audit_events(gateway))
    async with gateway.client("alice") as client:
        await client.list_tools()
        await client.call_tool("echo__echo", {"n": 3, "secret": "s3cr3t"})
        await client.call_tool("echo__echo", {"n": 50})
        with pytest.raises(MCPError):
            await client.call_tool("echo__crash", {})
    calls = [e for e in audit_events(gateway)[before:] if e["event"] == "tool_call"]
    assert "s3cr3t" not in gateway.config.audit_path.read_text()
    assert [(e["user"], e["org"], e["tool"], e["decision"], e.get("ended")) for e in calls] == [
        ("alice", "acme", "echo__echo", "allowed", "ok"),
        ("alice", "acme", "echo__echo", "out_of_scope", None),
        ("alice", "acme", "echo__crash", "denied", None),
    ]
    assert all(
        isinstance(e["latency_ms"], float) and len(str(e["arguments_sha256"])) == 64 for e in calls
    )
    assert "s3cr3t" not in gateway.config.audit_path.read_text()
    assert "exceeds max 5" in str(calls[1]["reason"])


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("headers", "description"),
    [
        ({}, None),
        ({"Authorization": "Bearer wrong-key-0123456789"}, "the credential is not valid"),
        ({"X-API-Key": "wrong-key-0123456789"}, "the credential is not valid"),
        ({"Authorization": "Basic YWxpY2U6cHc="}, "must be 'Bearer <credential>'"),
    ],
)
async def test_no_valid_credential_is_a_401_that_tells_nothing(
    gateway: Gateway, headers: dict[str, str], description: str | None
) -> None:
    async with httpx2.AsyncClient(timeout=5) as http:
        response = await http.post(gateway.url, json=INITIALIZE, headers={**HEADERS, **headers})
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="mcp-gateway"')
    if description is None:
        assert "error=" not in challenge
    else:
        assert 'error="invalid_token"' in challenge
        assert description in response.json()["error_description"]
    assert "echo" not in response.text


@pytest.mark.parametrize("mode", MODES)
async def test_request_hooks_see_every_mcp_request_whichever_door_served_it(
    gateway: Gateway, mode: str
) -> None:
    seen: list[McpRequest] = []
    stop = gateway.app.state.mcp.on_request(seen.append)
    try:
        async with httpx2.AsyncClient(timeout=5) as http:
            refused = await http.post(gateway.url, json=INITIALIZE, headers=HEADERS)
        assert refused.status_code == 401
        async with gateway.client("alice", mode) as alice:
            await alice.list_tools()  # the gateway's own door
            assert text(await alice.call_tool("echo__echo", {"n": 1})) == "[('n', 1)]"
            await alice.list_prompts()  # the SDK's
    finally:
        stop()
    assert (seen[0].method, seen[0].principal, seen[0].status) == ("POST", None, 401)
    alice_principal = Principal("alice", "acme")  # roles from the org file
    served = [r for r in seen[1:] if r.method == "POST"]
    assert len(served) >= 3
    assert {r.principal for r in served} == {alice_principal}
    assert {r.status for r in served} <= {200, 202}
    assert all(r.seconds >= 0 for r in seen)
    told = len(seen)
    async with httpx2.AsyncClient(timeout=5) as http:
        assert (await http.post(gateway.url, json=INITIALIZE, headers=HEADERS)).status_code == 401
    assert len(seen) == told  # stopped: no longer told


async def test_the_x_api_key_header_works_as_well(gateway: Gateway) -> None:
    async with httpx2.AsyncClient(timeout=5) as http:
        response = await http.post(
            gateway.url, json=INITIALIZE, headers={**HEADERS, "X-API-Key": KEYS["carol"]}
        )
    assert response.status_code == 200
    assert response.headers["mcp-session-id"]


async def test_a_session_answers_only_the_principal_that_opened_it(gateway: Gateway) -> None:
    alice = {**HEADERS, "Authorization": f"Bearer {KEYS['alice']}"}
    bob = {**HEADERS, "Authorization": f"Bearer {KEYS['bob']}"}
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    async with httpx2.AsyncClient(timeout=5) as http:
        opened = await http.post(gateway.url, json=INITIALIZE, headers=alice)
        session = opened.headers["mcp-session-id"]
        assert len(session) >= 32
        version = {"MCP-Protocol-Version": "2025-11-25", "Mcp-Session-Id": session}
        await http.post(
            gateway.url,
            json={"jsonrpc": "2.0", "method": "notifications/initialized"},
            headers={**alice, **version},
        )
        hijack = await http.post(gateway.url, json=listing, headers={**bob, **version})
        own = await http.post(gateway.url, json=listing, headers={**alice, **version})
    assert hijack.status_code == 404
    assert "echo__" not in hijack.text
    assert own.status_code == 200
    assert "echo__echo" in own.text


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Host": "evil.example:8080"}, 421),
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "http://localhost:3000"}, 200),
    ],
)
async def test_host_and_origin_are_checked(
    gateway: Gateway, headers: dict[str, str], status: int
) -> None:
    auth = {"Authorization": f"Bearer {KEYS['alice']}"}
    async with httpx2.AsyncClient(timeout=5) as http:
        response = await http.post(
            gateway.url, json=INITIALIZE, headers={**HEADERS, **auth, **headers}
        )
    assert response.status_code == status


@pytest.mark.parametrize("bad_id", [None, True, 1.5, 2.0])
async def test_a_request_id_that_is_null_boolean_or_fractional_is_invalid(
    gateway: Gateway, bad_id: object
) -> None:
    auth = {"Authorization": f"Bearer {KEYS['alice']}"}
    async with httpx2.AsyncClient(timeout=5) as http:
        response = await http.post(
            gateway.url, json={**INITIALIZE, "id": bad_id}, headers={**HEADERS, **auth}
        )
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["code"] == types.INVALID_REQUEST
    assert body["id"] is None


@pytest.mark.parametrize("mode", MODES)
async def test_resources_and_prompts_come_from_upstreams_with_a_granted_tool(
    gateway: Gateway, mode: str
) -> None:
    async with gateway.client("alice", mode) as alice, gateway.client("carol", mode) as carol:
        assert [r.uri for r in (await alice.list_resources()).resources] == [
            "gateway://context",
            "echo://static",
        ]
        templates = (await alice.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["echo://items/{id}"]
        assert [p.name for p in (await alice.list_prompts()).prompts] == ["context", "echo__greet"]
        read = await alice.read_resource("echo://items/7")
        assert read.contents[0].uri == "echo://items/7"
        greeting = await alice.get_prompt("echo__greet", {"name": "Ann"})
        assert greeting.messages[0].content == types.TextContent(type="text", text="Hello Ann")

        # carol has no echo tool: echo's resources and prompts do not exist for her.
        assert [r.uri for r in (await carol.list_resources()).resources] == ["gateway://context"]
        assert (await carol.list_resource_templates()).resource_templates == []
        assert [p.name for p in (await carol.list_prompts()).prompts] == ["context"]
        with pytest.raises(MCPError) as unread:
            await carol.read_resource("echo://static")
        # Answered as a resource that does not exist, in the code of the caller's era:
        # -32002 in the handshake era, -32602 at 2026-07-28 (SEP-2164); both name the URI.
        assert unread.value.error.code == (-32002 if mode == "legacy" else -32602)
        assert unread.value.error.data == {"uri": "echo://static"}
        with pytest.raises(MCPError) as ungot:
            await carol.get_prompt("echo__greet", {"name": "Ann"})
        assert ungot.value.error.message == "Unknown prompt: echo__greet"


async def test_the_callers_instructions_are_a_prompt_and_a_resource(gateway: Gateway) -> None:
    async with gateway.client("alice") as alice:
        prompt = await alice.get_prompt("context")
        resource = await alice.read_resource("gateway://context")
    content = prompt.messages[0].content
    assert isinstance(content, types.TextContent)
    assert "Acme Corp: be polite." in content.text
    assert "You help customers." in content.text
    contents = resource.contents[0]
    assert isinstance(contents, types.TextResourceContents)
    assert contents.text == content.text


@pytest.mark.parametrize("mode", MODES)
async def test_progress_and_logs_of_a_call_reach_its_caller(gateway: Gateway, mode: str) -> None:
    reported: list[tuple[float, float | None, str | None]] = []
    logs: list[object] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reported.append((progress, total, message))

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async with gateway.client("alice", mode, logging_callback=on_log, log_level="info") as alice:
        await alice.list_tools()
        result = await alice.call_tool(
            "echo__sleep", {"seconds": 0.3}, progress_callback=on_progress
        )
    assert text(result) == "slept"
    assert reported == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]
    assert logs == [{"step": 1}, {"step": 2}, {"step": 3}]


@pytest.mark.parametrize("mode", MODES)
async def test_cancelling_a_call_cancels_it_upstream(gateway: Gateway, mode: str) -> None:
    async with gateway.client("alice", mode) as alice:
        await alice.list_tools()
        before = int(text(await alice.call_tool("echo__cancelled", {})))
        with anyio.move_on_after(0.5):
            await alice.call_tool("echo__sleep", {"seconds": 5})
        for _ in range(100):
            after = int(text(await alice.call_tool("echo__cancelled", {})))
            if after > before:
                break
            await anyio.sleep(0.05)
    assert after == before + 1


@pytest.mark.parametrize("mode", MODES)
async def test_completion_goes_to_the_upstream_under_its_own_names(
    gateway: Gateway, mode: str
) -> None:
    async with gateway.client("alice", mode) as alice, gateway.client("carol", mode) as carol:
        prompt = types.PromptReference(type="ref/prompt", name="echo__greet")
        names = await alice.complete(prompt, {"name": "name", "value": "An"})
        template = types.ResourceTemplateReference(type="ref/resource", uri="echo://items/{id}")
        ids = await alice.complete(template, {"name": "id", "value": ""})
        with pytest.raises(MCPError, match="Unknown prompt: echo__greet"):
            await carol.complete(prompt, {"name": "name", "value": "An"})
    assert names.completion.values == ["Ann", "Andy"]
    assert ids.completion.values == ["1", "2", "3"]


async def test_a_subscribed_client_hears_of_resource_updates(gateway: Gateway) -> None:
    updates: list[str] = []

    async def inbox(message: object) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updates.append(str(message.params.uri))

    async with (
        gateway.client("alice", "legacy", message_handler=inbox) as alice,
        gateway.client("carol", "legacy") as carol,
    ):
        await alice.list_tools()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await alice.subscribe_resource("echo://static")
            with pytest.raises(MCPError) as refused:
                await carol.subscribe_resource("echo://static")
        assert refused.value.error.code == -32002
        await alice.call_tool("echo__mutate", {"touch": "echo://static"})
        await alice.call_tool("echo__mutate", {"touch": "echo://items/9"})  # not followed
        await until(lambda: bool(updates), 2)
        await anyio.sleep(0.2)
    assert updates == ["echo://static"]


async def test_a_modern_client_follows_resources_on_its_listen_stream(gateway: Gateway) -> None:
    async with gateway.client("alice") as alice:
        await alice.list_tools()
        async with alice.listen(resource_subscriptions=["echo://static"]) as events:
            await alice.call_tool("echo__mutate", {"touch": "echo://static"})
            with anyio.fail_after(2):
                event = await events.__anext__()
    assert event == ResourceUpdated(uri="echo://static")


async def test_listings_are_marked_private_to_the_caller(gateway: Gateway) -> None:
    async with gateway.client("alice") as alice:
        assert alice.protocol_version == "2026-07-28"
        tools = await alice.list_tools()
        resources = await alice.list_resources()
    assert (tools.cache_scope, tools.ttl_ms) == ("private", 0)
    assert resources.cache_scope == "private"


async def test_the_sdk_gets_tool_schemas_from_the_callers_view(gateway: Gateway) -> None:
    """2026-07-28 calls check `Mcp-Param-*` headers against the tool's schema; the SDK asks
    this hook (else it would run the caller's whole tools/list per call), and a tool the
    caller may not see has no schema."""
    front = gateway.app.state.front
    assert front.server.get_tool_input_schema == front.input_schema
    reset = current_credential.set(Credential(Principal("bob", "acme"), "api_key", "t"))
    try:
        assert front.input_schema("echo__pid") == {"type": "object"}
        assert front.input_schema("echo__echo") is None  # alice's, not bob's
    finally:
        current_credential.reset(reset)


async def test_an_escaped_id_key_is_checked_too(gateway: Gateway) -> None:
    auth = {"Authorization": f"Bearer {KEYS['alice']}"}
    body = json.dumps({**INITIALIZE, "id": None}).replace('"id"', '"\\u0069d"')
    async with httpx2.AsyncClient(timeout=5) as http:
        response = await http.post(gateway.url, content=body, headers={**HEADERS, **auth})
    assert response.status_code == 400
