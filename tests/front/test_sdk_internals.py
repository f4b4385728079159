"""gateway/sdk_internals.py: each private SDK name the gateway reaches is checked at
start-up. Every checked name is broken in turn, on the installed SDK's own classes, and
the check must say which; a broken name stops `gateway serve` and `gateway stdio` in one
message, and one only the handshake-era door needs leaves its calls to the SDK."""

from __future__ import annotations

import logging
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from mcp.server.session import ServerSession
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from gateway import sdk_internals
from gateway.errors import SdkMismatch
from gateway.front.session_calls import SessionCalls
from gateway.front.session_transport import GatewaySessionManager, SessionTransport
from gateway.sdk_internals import DOOR_ONLY, REQUIRED, Reached
from tests.conftest import ROOT
from tests.front.harness import KEYS, key_entries, running_gateway
from tests.front.helpers import open_session, session_post

METHODS = [entry for entry in REQUIRED + DOOR_ONLY if entry.kind in ("method", "coroutine")]
ATTRIBUTES = [entry for entry in REQUIRED + DOOR_ONLY if entry.kind == "attribute"]
UNUSED = [entry for entry in REQUIRED if entry.kind == "unused"]


def _id(entry: Reached) -> str:
    return entry.label


def _fails(entry: Reached, why: str) -> None:
    """The check for `entry`'s group fails, naming it and `why`; the other group passes."""
    if entry in REQUIRED:
        with pytest.raises(SdkMismatch) as raised:
            sdk_internals.check()
        message = str(raised.value)
        assert sdk_internals.door_problem() is None
    else:
        sdk_internals.check()
        mismatch = sdk_internals.door_problem()
        assert mismatch is not None
        message = str(mismatch)
    line = next((line for line in message.splitlines() if entry.label in line), None)
    assert line is not None, message
    assert why in line, message
    assert sdk_internals.PINNED in message


def _defining_class(entry: Reached) -> type:
    return next(cls for cls in entry.owner.__mro__ if entry.name in vars(cls))


def test_the_installed_sdk_has_everything_reached() -> None:
    sdk_internals.check()
    assert sdk_internals.door_problem() is None


def test_the_pin_is_pyprojects() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    dependencies = project["project"]["dependencies"]
    assert sdk_internals.PINNED in dependencies


@pytest.mark.parametrize("entry", METHODS, ids=_id)
def test_a_method_gone_is_named(entry: Reached, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(_defining_class(entry), entry.name)
    _fails(entry, "found no such name")


@pytest.mark.parametrize("entry", METHODS, ids=_id)
def test_a_method_with_other_parameters_is_named(
    entry: Reached, monkeypatch: pytest.MonkeyPatch
) -> None:
    def sync(self: Any, *, other: Any) -> None:
        pass

    async def coroutine(self: Any, *, other: Any) -> None:
        pass

    monkeypatch.setattr(entry.owner, entry.name, coroutine if entry.kind == "coroutine" else sync)
    _fails(entry, "found (self, other)")


@pytest.mark.parametrize("entry", METHODS, ids=_id)
def test_a_method_of_the_other_kind_is_named(
    entry: Reached, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A coroutine that became a plain method (or the other way) under the same name."""

    def sync(self: Any, *args: Any) -> None:
        pass

    async def coroutine(self: Any, *args: Any) -> None:
        pass

    monkeypatch.setattr(entry.owner, entry.name, sync if entry.kind == "coroutine" else coroutine)
    found = "a method (not a coroutine)" if entry.kind == "coroutine" else "a coroutine method"
    _fails(entry, f"found {found}")


def _after_init(
    monkeypatch: pytest.MonkeyPatch, owner: type, change: Callable[[Any], None]
) -> None:
    original = cast(Callable[..., None], vars(owner)["__init__"])

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        change(self)

    monkeypatch.setattr(owner, "__init__", init)


@pytest.mark.parametrize("entry", ATTRIBUTES, ids=_id)
def test_an_attribute_gone_is_named(entry: Reached, monkeypatch: pytest.MonkeyPatch) -> None:
    def remove(instance: Any) -> None:
        if entry.name in vars(instance):
            delattr(instance, entry.name)

    _after_init(monkeypatch, entry.owner, remove)
    for cls in entry.owner.__mro__:  # a class-level default, as `_write_stream` has
        if entry.name in vars(cls):
            monkeypatch.delattr(cls, entry.name)
    _fails(entry, "found no such name")


@pytest.mark.parametrize("entry", ATTRIBUTES, ids=_id)
def test_an_attribute_that_means_something_else_is_named(
    entry: Reached, monkeypatch: pytest.MonkeyPatch
) -> None:
    _after_init(monkeypatch, entry.owner, lambda instance: setattr(instance, entry.name, "other"))
    _fails(entry, "found 'other'")


@pytest.mark.parametrize("entry", UNUSED, ids=_id)
def test_an_sdk_name_the_adapter_would_shadow_is_named(
    entry: Reached, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(entry.owner, entry.name, lambda self: None, raising=False)
    _fails(entry, "expected no such name")


@pytest.mark.parametrize("name", ["_resume", "_release"])
def test_an_sdk_name_the_gateways_subclass_would_shadow_is_named(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert name in vars(SessionTransport)
    monkeypatch.setattr(StreamableHTTPServerTransport, name, lambda self: None, raising=False)
    with pytest.raises(SdkMismatch, match=rf"SessionTransport\.{name}: expected .* no such name"):
        sdk_internals.check()


@pytest.mark.parametrize(
    ("sdk_class", "subclass", "name"),
    [
        (StreamableHTTPServerTransport, SessionTransport, "_resumes"),
        (StreamableHTTPSessionManager, GatewaySessionManager, "_events_store"),
    ],
)
def test_an_sdk_instance_attribute_the_gateways_subclass_would_shadow_is_named(
    sdk_class: type, subclass: type, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SDK release whose __init__ sets a name the gateway's subclass sets too: each
    would overwrite the other's state."""
    original: Callable[..., None] = vars(sdk_class)["__init__"]

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        setattr(self, name, None)

    sdk_internals.check()  # as installed: no such clash
    monkeypatch.setattr(sdk_class, "__init__", init)
    pattern = rf"{subclass.__name__}\.{name}: expected .* instances to have no such attribute"
    with pytest.raises(SdkMismatch, match=pattern):
        sdk_internals.check()


def test_a_class_that_cannot_be_probed_fails_each_of_its_attributes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(self: Any, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a new required argument")

    monkeypatch.setattr(ServerSession, "__init__", refuse)
    with pytest.raises(SdkMismatch, match=r"ServerSession\._connection: .*could not be built"):
        sdk_internals.check()


def _quiet_config(directory: Path) -> Path:
    """A gateway.yaml with no upstreams, so that nothing is left running should the
    check not stop it."""
    (directory / "orgs").mkdir()
    config = directory / "gateway.yaml"
    config.write_text("auth:\n  dev: true\n  api_keys:\n" + key_entries(), encoding="utf-8")
    return config


BREAK_REPLAY = (
    "from mcp.server.streamable_http import StreamableHTTPServerTransport\n"
    "del StreamableHTTPServerTransport._replay_events\n"
)


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["stdio", "--api-key", KEYS["bob"]]])
def test_a_gateway_on_an_sdk_without_a_needed_name_does_not_start(
    tmp_path: Path, command: list[str]
) -> None:
    config = _quiet_config(tmp_path)
    launcher = BREAK_REPLAY + "import sys\nfrom gateway.cli import main\nsys.exit(main())\n"
    done = subprocess.run(
        [sys.executable, "-c", launcher, *command, "--config", str(config)],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "cannot start: the installed mcp " in done.stderr
    expected = "StreamableHTTPServerTransport._replay_events: expected a coroutine method"
    assert expected in done.stderr
    assert done.stdout == ""


@pytest.mark.anyio
async def test_a_door_only_name_changed_leaves_the_calls_to_the_sdk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The SDK still calls `_check_content_type(request)`, so its door keeps working; the
    gateway's own door, which expects exactly (self, request), stays closed."""
    transport = StreamableHTTPServerTransport
    original = vars(transport)["_check_content_type"]

    def widened(self: Any, request: Any, strict: bool = False) -> bool:
        return bool(original(self, request))

    monkeypatch.setattr(transport, "_check_content_type", widened)
    served: list[str] = []
    answer = SessionCalls._answer

    async def counting(self: SessionCalls, *args: Any) -> None:
        served.append("gateway")
        await answer(self, *args)

    monkeypatch.setattr(SessionCalls, "_answer", counting)
    caplog.set_level(logging.WARNING, logger="gateway.front")
    async with running_gateway(tmp_path) as gateway:
        headers = await open_session(gateway)
        call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call"}
        call["params"] = {"name": "echo__pid", "arguments": {}}
        status, kind, same_session, events = await session_post(gateway, headers, call)
    assert status == 200
    assert kind == "text/event-stream"  # the SDK's form; the gateway's would be JSON
    assert same_session
    answers = [message for message, _ in events if message is not None]
    assert [message["id"] for message in answers] == [5]
    assert "result" in answers[0], answers
    assert served == []
    warnings = [r.getMessage() for r in caplog.records if "left to the SDK" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "StreamableHTTPServerTransport._check_content_type" in warnings[0]
    assert "found (self, request, strict)" in warnings[0]
