"""The call service: permission, catalog and schema checks before anything reaches an
upstream, one typed outcome per call, and every call told to the outcome hooks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest

from gateway.audit import AuditLog
from gateway.calls import (
    CallChannel,
    CallRecord,
    Completed,
    Failed,
    Mode,
    Refused,
    ToolCall,
    ToolService,
)
from gateway.calls import service as service_module
from gateway.errors import (
    CallTimeout,
    ConnectionLost,
    InternalFailure,
    InvalidArguments,
    MalformedArguments,
    NotRun,
    PermissionDenied,
    UnknownTool,
    UpstreamRejected,
)
from gateway.jsoncodec import MAX_DEPTH
from gateway.principal import Principal
from gateway.tags.loader import tagset_from_texts
from gateway.tags.resolve import resolve
from gateway.upstreams.pool import Pool
from gateway.upstreams.schemas import check_arguments
from tests.upstreams.helpers import stdio, text

pytestmark = pytest.mark.anyio

ACME = """
users:
  alice: {roles: [agent]}
tags:
  - tag: tool_echo
    kind: tool
    payload:
      config:
        assigned_roles: [agent]
        allowed_tools: ["echo__echo", "echo__sleep", "echo__pid", "echo__crash", "echo__gone",
                        "echo__lookup", "echo__pay", "echo__reject"]
        denied_tools: ["echo__crash"]
        scopes:
          echo__echo: {n: {max: 5}}
"""
ALICE = resolve(tagset_from_texts({"acme.yaml": ACME}), Principal("alice", "acme"))


@pytest.fixture
async def service(request: pytest.FixtureRequest) -> AsyncIterator[ToolService]:
    """The echo upstream with a call_timeout of 5 s, or of `request.param` s."""
    pool = Pool({"echo": stdio(call_timeout=getattr(request, "param", 5))})
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(pool.run)
        with anyio.fail_after(20):
            await pool.settled()
        yield ToolService(pool)
        tasks.cancel_scope.cancel()


async def pid(service: ToolService) -> str:
    outcome = await service.call(ALICE, ToolCall("echo__pid", {}))
    assert isinstance(outcome, Completed)
    return text(outcome.result)


async def test_a_permitted_call_returns_the_upstream_result(service: ToolService) -> None:
    outcome = await service.call(ALICE, ToolCall("echo__echo", {"n": 3}))
    assert isinstance(outcome, Completed)
    assert isinstance(outcome.result, types.CallToolResult)
    assert text(outcome.result) == "[('n', 3)]"
    assert outcome.result.structured_content == {"n": 3}
    assert outcome.result.is_error is False
    assert outcome.result.meta is None  # the upstream's serverInfo stamp is not passed on
    assert outcome.seconds > 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            ToolCall("echo__echo", {"n": 50}),
            "echo__echo: not permitted: n 50 exceeds max 5 set by tag tool_echo",
        ),
        (
            ToolCall("echo__crash", {}),
            "echo__crash: not permitted: echo__crash is denied by tag tool_echo",
        ),
        (ToolCall("echo__mutate", {}), "echo__mutate: not permitted: no applied tag grants"),
    ],
)
async def test_a_refused_call_never_reaches_the_upstream(
    service: ToolService, call: ToolCall, message: str
) -> None:
    before = await pid(service)
    outcome = await service.call(ALICE, call)
    assert isinstance(outcome, Refused)
    assert isinstance(outcome.error, PermissionDenied)
    assert str(outcome.error).startswith(message)
    assert await pid(service) == before  # crash was not sent: the same child answers


async def test_arguments_are_checked_against_the_input_schema(service: ToolService) -> None:
    outcome = await service.call(ALICE, ToolCall("echo__sleep", {"seconds": "soon"}))
    assert isinstance(outcome, Refused)
    assert isinstance(outcome.error, InvalidArguments)
    assert str(outcome.error) == (
        "echo__sleep: arguments do not fit its inputSchema: seconds: 'soon' is not of type 'number'"
    )


async def test_a_granted_tool_no_upstream_offers(service: ToolService) -> None:
    outcome = await service.call(ALICE, ToolCall("echo__gone", {}))
    assert isinstance(outcome, Refused)
    assert isinstance(outcome.error, UnknownTool)
    assert str(outcome.error) == "echo__gone: no upstream offers this tool"


async def test_an_upstream_error_answer_is_ours_and_keeps_its_code(service: ToolService) -> None:
    outcome = await service.call(ALICE, ToolCall("echo__reject", {}))
    assert isinstance(outcome, Failed)
    assert isinstance(outcome.error, UpstreamRejected)
    assert (outcome.error.code, outcome.error.message) == (-32050, "rejected by echo")
    assert outcome.error.data == {"why": "asked to"}


QUICK = pytest.mark.parametrize("service", [1], indirect=True)
"""call_timeout 1 s"""
BATCH = [
    ToolCall("echo__echo", {"n": 1}),
    ToolCall("echo__reject", {}),  # the upstream's error answer
    ToolCall("echo__sleep", {"seconds": 1.5}),  # past call_timeout (QUICK)
    ToolCall("echo__crash", {}),  # refused
    ToolCall("echo__echo", {"n": 2}),
]


@QUICK
@pytest.mark.parametrize("mode", [Mode.SEQUENTIAL, Mode.PARALLEL])
async def test_execute_many_gives_one_outcome_per_call_whatever_the_others_do(
    service: ToolService, mode: Mode
) -> None:
    outcomes = await service.execute_many(ALICE, BATCH, mode=mode, max_concurrency=5)
    assert [o.call.tool for o in outcomes] == [c.tool for c in BATCH]
    kinds = [(type(o).__name__, type(getattr(o, "error", None)).__name__) for o in outcomes]
    assert kinds == [
        ("Completed", "NoneType"),
        ("Failed", "UpstreamRejected"),
        ("Failed", "CallTimeout"),
        ("Refused", "PermissionDenied"),
        ("Completed", "NoneType"),
    ]
    last = outcomes[4]
    assert isinstance(last, Completed)
    assert text(last.result) == "[('n', 2)]"


@QUICK
async def test_a_sequential_batch_may_stop_at_the_first_failure(service: ToolService) -> None:
    told: list[CallRecord] = []
    stop = service.on_outcome(told.append)
    try:
        stopped = await service.execute_many(ALICE, BATCH, stop_on_error=True)
    finally:
        stop()
    stop()  # a second time does nothing
    assert [type(o).__name__ for o in stopped] == ["Completed", "Failed", *["Refused"] * 3]
    assert all(isinstance(o, Refused) and isinstance(o.error, NotRun) for o in stopped[2:])
    assert str(stopped[2].error) == "echo__sleep: not run: an earlier call failed"  # type: ignore[union-attr]
    # The calls not run are told too: the batch asked for them.
    assert [(r.call.tool, r.decision, r.ended) for r in told] == [
        ("echo__echo", "allowed", "ok"),
        ("echo__reject", "allowed", "failed"),
        *((call.tool, "not_run", None) for call in BATCH[2:]),
    ]


@QUICK
async def test_a_timeout_is_its_own_error(service: ToolService) -> None:
    outcome = await service.call(ALICE, ToolCall("echo__sleep", {"seconds": 1.5}))
    assert isinstance(outcome, Failed)
    assert isinstance(outcome.error, CallTimeout)
    assert str(outcome.error) == "sleep on upstream echo did not answer within 1 s"


async def test_only_tools_annotated_safe_to_repeat_are_retried(
    service: ToolService, tmp_path: Path
) -> None:
    lookup, pay = tmp_path / "lookup", tmp_path / "pay"
    outcome = await service.call(ALICE, ToolCall("echo__lookup", {"journal": str(lookup)}))
    assert isinstance(outcome, Completed)
    assert text(outcome.result) == "done"
    assert lookup.read_text() == "lookup\nlookup\n"
    outcome = await service.call(ALICE, ToolCall("echo__pay", {"journal": str(pay)}))
    assert isinstance(outcome, Failed)
    assert isinstance(outcome.error, ConnectionLost)
    assert "the connection was lost during pay" in str(outcome.error)
    with anyio.fail_after(15):
        await service.pool.connections["echo"].wait_ready()
    assert await pid(service)  # the upstream is back, and nothing retried the payment
    assert pay.read_text() == "pay\n"


async def test_arguments_that_cannot_be_sent_are_refused_before_anything_else(
    service: ToolService, tmp_path: Path
) -> None:
    """Whichever door a call came through (`gateway stdio`'s parser lets NaN through, an
    in-process caller may pass anything): refused before the permission check, so the
    answer says nothing of the tool, and audited as invalid arguments."""
    audit = AuditLog(tmp_path / "audit.jsonl")
    service.on_outcome(audit.record_call)
    before = await pid(service)
    refused = 0
    for arguments in ({"n": 1, "t": "\ud800"}, {"\udc00": 1}, {"n": float("nan")}):
        for tool in ("echo__echo", "echo__crash", "echo__nothing"):
            outcome = await service.call(ALICE, ToolCall(tool, arguments))
            assert isinstance(outcome, Refused)
            assert isinstance(outcome.error, MalformedArguments)
            assert "the arguments cannot be sent" in str(outcome.error)
            refused += 1
    events = [e for e in audit.read() if e["event"] == "tool_call"][-refused:]
    assert {e["decision"] for e in events} == {"invalid_arguments"}
    assert "arguments.t: text that is not valid Unicode" in str(events[0]["reason"])
    assert await pid(service) == before  # the upstream's process, untouched


async def test_arguments_no_digest_can_be_taken_of_are_audited_all_the_same(
    service: ToolService, tmp_path: Path
) -> None:
    """An in-process caller's keys of two types (which cannot be sorted) and arguments
    nested past the JSON writer's recursion: each call has its audit record."""
    audit = AuditLog(tmp_path / "audit.jsonl")
    service.on_outcome(audit.record_call)
    deep: Any = 1
    for _ in range(2000):
        deep = [deep]
    cases: list[dict[Any, Any]] = [{1: "one", "n": 1}, {"n": 1, "x": deep}]
    for arguments in cases:
        outcome = await service.call(ALICE, ToolCall("echo__echo", arguments))
        assert not outcome.ok
    events = [e for e in audit.read() if e["event"] == "tool_call"]
    assert len(events) == 2
    assert all(len(e["arguments_sha256"]) == 64 for e in events)


def nested(depth: int) -> Any:
    """Arguments `depth` levels deep, the arguments' own object counting one."""
    value: Any = 1
    for _ in range(depth - 1):
        value = [value]
    return {"n": 1, "x": value}


async def test_arguments_nested_too_deep_to_send_are_refused_as_malformed(
    service: ToolService, tmp_path: Path
) -> None:
    """Past MAX_DEPTH levels (the SDK client's writer gives up at about 250, the standard
    library's at about 1,000, and an in-process caller's value that contains itself is
    deep without end): refused as the caller's malformed input before anything else, as
    text that is not Unicode is, never an internal failure or a hang, and audited."""
    audit = AuditLog(tmp_path / "audit.jsonl")
    service.on_outcome(audit.record_call)
    before = await pid(service)
    looped: dict[str, Any] = {"n": 1}
    looped["self"] = looped
    for arguments in (nested(MAX_DEPTH + 1), nested(300), nested(2000), looped):
        with anyio.fail_after(10):
            outcome = await service.call(ALICE, ToolCall("echo__echo", arguments))
        assert isinstance(outcome, Refused)
        assert isinstance(outcome.error, MalformedArguments)
        assert f"nested more than {MAX_DEPTH} levels deep" in str(outcome.error)
    events = [e for e in audit.read() if e["event"] == "tool_call"][-4:]
    assert [e["decision"] for e in events] == ["invalid_arguments"] * 4
    assert events[0]["reason"] == f"arguments.x: nested more than {MAX_DEPTH} levels deep"
    outcome = await service.call(ALICE, ToolCall("echo__echo", nested(MAX_DEPTH)))
    assert isinstance(outcome, Completed)
    assert outcome.result.structured_content == nested(MAX_DEPTH)  # type: ignore[union-attr]
    assert await pid(service) == before


async def test_every_call_is_told_to_the_hooks_once_cancelled_ones_too(
    service: ToolService,
) -> None:
    records: list[CallRecord] = []
    stop = service.on_outcome(records.append)

    def broken(_record: CallRecord) -> None:
        raise RuntimeError("a hook's bug")

    service.on_outcome(broken)
    await service.call(ALICE, ToolCall("echo__echo", {"n": 1}))
    await service.call(ALICE, ToolCall("echo__crash", {}))
    with anyio.move_on_after(0.3):
        await service.call(ALICE, ToolCall("echo__sleep", {"seconds": 0.9}))
    stop()
    await service.call(ALICE, ToolCall("echo__echo", {"n": 1}))
    told = [(r.call.tool, r.decision, r.ended, r.upstream) for r in records]
    assert told == [
        ("echo__echo", "allowed", "ok", "echo"),
        ("echo__crash", "denied", None, None),
        ("echo__sleep", "allowed", "cancelled", "echo"),
    ]


async def test_logs_reach_the_channel_at_its_level_and_above(service: ToolService) -> None:
    seen: list[str] = []

    async def log(message: types.LoggingMessageNotificationParams) -> None:
        seen.append(message.level)

    levels: tuple[types.LoggingLevel, ...] = ("info", "warning")
    for level in levels:
        channel = CallChannel(log=log, log_level=level)
        outcome = await service.call(ALICE, ToolCall("echo__sleep", {"seconds": 0.2}), channel)
        assert isinstance(outcome, Completed)
    assert seen == ["info", "info"]  # the sleep logs at info: none pass at warning


async def test_a_bug_on_the_way_is_an_outcome_that_tells_the_caller_nothing(
    service: ToolService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unforeseen exception, before the call (here in the schema check) or around it
    (in the upstream connection), is logged and told to the hooks as it was; the outcome
    says no more than that the gateway failed, and a batch loses nothing else."""
    records: list[CallRecord] = []
    service.on_outcome(records.append)
    real_check = check_arguments

    async def buggy_check(schema_key: str, arguments: Any) -> str | None:
        if arguments.get("n") == 4:
            raise KeyError("/srv/secret/token.txt")
        return await real_check(schema_key, arguments)

    monkeypatch.setattr(service_module, "check_arguments", buggy_check)
    calls = [ToolCall("echo__echo", {"n": n}) for n in (1, 4, 2)]
    outcomes = await service.execute_many(ALICE, calls, mode=Mode.PARALLEL)
    assert [type(o).__name__ for o in outcomes] == ["Completed", "Failed", "Completed"]
    failed = outcomes[1]
    assert isinstance(failed, Failed)
    assert isinstance(failed.error, InternalFailure)
    assert str(failed.error) == "echo__echo on upstream echo failed: an internal error (logged)"
    assert failed.decision is not None
    assert failed.decision.allowed
    told = [r for r in records if r.call.arguments == {"n": 4}]
    assert [(r.decision, r.ended, r.error, r.upstream) for r in told] == [
        ("allowed", "failed", "'/srv/secret/token.txt'", "echo")
    ]

    connection = service.pool.connections["echo"]

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise KeyError("/srv/secret/token.txt")

    monkeypatch.setattr(connection, "call_tool", broken)
    outcome = await service.call(ALICE, ToolCall("echo__echo", {"n": 1}))
    assert isinstance(outcome, Failed)
    assert str(outcome.error) == "echo__echo on upstream echo failed: an internal error (logged)"
    assert (records[-1].decision, records[-1].ended) == ("allowed", "failed")
    assert records[-1].error == "'/srv/secret/token.txt'"


async def test_a_call_cancelled_in_its_schema_check_is_told_as_cancelled(
    service: ToolService, monkeypatch: pytest.MonkeyPatch
) -> None:
    records: list[CallRecord] = []
    service.on_outcome(records.append)

    async def slow_check(_schema_key: str, _arguments: Any) -> str | None:
        await anyio.sleep(5)  # as a large argument's check in a worker thread may take
        return None

    monkeypatch.setattr(service_module, "check_arguments", slow_check)
    with anyio.move_on_after(0.2):
        await service.call(ALICE, ToolCall("echo__echo", {"n": 1}))
    assert [(r.decision, r.ended, r.upstream) for r in records] == [
        ("allowed", "cancelled", "echo")
    ]


async def test_a_hook_that_stops_itself_does_not_hide_the_call_from_the_next(
    service: ToolService,
) -> None:
    later: list[str] = []
    stops: list[Callable[[], None]] = []

    def once(_record: CallRecord) -> None:
        stops[0]()

    stops.append(service.on_outcome(once))
    service.on_outcome(lambda record: later.append(record.call.tool))
    await service.call(ALICE, ToolCall("echo__echo", {"n": 1}))
    await service.call(ALICE, ToolCall("echo__echo", {"n": 2}))
    assert later == ["echo__echo", "echo__echo"]
