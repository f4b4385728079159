"""Envelopes: what the model may answer, how a wrong answer is told back to it for a
repair turn, and the schema it is shown (the Messages API's strict subset)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import anthropic
import pytest

from gateway.engine.envelopes import (
    ClarifyEnvelope,
    ErrorEnvelope,
    InvalidEnvelope,
    PlanEnvelope,
    ReplyEnvelope,
    ToolEnvelope,
    ToolsEnvelope,
    envelope_schema,
    parse,
)

BASE = {"confidence": 0.9, "reasoning": "because"}


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (
            {"kind": "tool", "call": {"tool": "crm__find", "arguments": '{"q": "ada"}'}},
            ToolEnvelope,
        ),
        (
            {
                "kind": "tools",
                "mode": "parallel",
                "calls": [
                    {"tool": "crm__find", "arguments": "{}"},
                    {"tool": "orders__list", "arguments": '{"limit": 5}'},
                ],
            },
            ToolsEnvelope,
        ),
        ({"kind": "plan", "goal": "refund order A-17", "flow": "refund"}, PlanEnvelope),
        ({"kind": "reply", "text": "Done."}, ReplyEnvelope),
        ({"kind": "clarify", "question": "Which order?"}, ClarifyEnvelope),
        ({"kind": "error", "reason": "no tool can do that"}, ErrorEnvelope),
    ],
)
def test_each_kind_parses(data: dict[str, Any], kind: type) -> None:
    envelope = parse({**BASE, **data})
    assert type(envelope) is kind
    assert envelope.confidence == 0.9


def test_arguments_come_as_json_text_or_as_the_object() -> None:
    from_model = parse(
        {**BASE, "kind": "tool", "call": {"tool": "t", "arguments": '{"n": [1, 2]}'}}
    )
    in_process = parse({**BASE, "kind": "tool", "call": {"tool": "t", "arguments": {"n": [1, 2]}}})
    assert isinstance(from_model, ToolEnvelope)
    assert isinstance(in_process, ToolEnvelope)
    assert from_model.call.arguments == in_process.call.arguments == {"n": [1, 2]}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"kind": "dance"}, "Input tag 'dance' found using 'kind' does not match"),
        ({}, "Unable to extract tag using discriminator 'kind'"),
        ({"kind": "reply"}, "reply.text: Field required"),
        (
            {"kind": "reply", "text": "x", "confidence": 1.5},
            "reply.confidence: Input should be less",
        ),
        (
            {"kind": "reply", "text": "x", "mood": "happy"},
            "reply.mood: Extra inputs are not permitted",
        ),
        (
            {"kind": "tool", "call": {"tool": "t", "arguments": "{nope"}},
            "tool.call.arguments: Value error, the arguments are not JSON text",
        ),
        (
            {"kind": "tool", "call": {"tool": "t", "arguments": "[1]"}},
            "the arguments must be a JSON object",
        ),
        (
            {"kind": "tools", "mode": "parallel", "calls": []},
            "tools.calls: Tuple should have at least 1 item",
        ),
        ({"kind": "plan", "goal": "g"}, "lists at least one step"),
        (
            {
                "kind": "plan",
                "goal": "g",
                "flow": "refund",
                "steps": [{"id": "a", "tool": "t", "arguments": "{}"}],
            },
            "not both",
        ),
    ],
)
def test_what_does_not_fit_is_named_for_the_repair_turn(data: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidEnvelope) as caught:
        parse({**BASE, **data})
    assert problem in str(caught.value)


def step(id: str, arguments: Any) -> dict[str, Any]:
    return {"id": id, "tool": "t", "arguments": json.dumps(arguments)}


def test_a_plans_steps_may_take_only_earlier_steps_outputs() -> None:
    plan = parse(
        {
            **BASE,
            "kind": "plan",
            "goal": "g",
            "steps": [
                step("find", {"q": "ada"}),
                step("order", {"customer": {"$step": "find", "path": "/structuredContent/id"}}),
            ],
        }
    )
    assert isinstance(plan, PlanEnvelope)
    assert [s.id for s in plan.steps] == ["find", "order"]
    for steps, problem in (
        (
            [step("a", {"x": {"$step": "b", "path": ""}}), step("b", {})],
            "'b', which is not an earlier",
        ),
        ([step("a", {"x": {"$step": "a", "path": ""}})], "'a', which is not an earlier"),
        ([step("a", {}), step("a", {})], "step id 'a' is used twice"),
    ):
        with pytest.raises(InvalidEnvelope, match=problem):
            parse({**BASE, "kind": "plan", "goal": "g", "steps": steps})


def test_a_failure_lists_at_most_five_problems() -> None:
    with pytest.raises(InvalidEnvelope, match=r"\(and 2 more\)$"):
        parse({"kind": "reply", "a": 1, "b": 2, "c": 3, "d": 4})  # 4 extra, 3 missing


def walk(schema: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    stack = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def test_the_schema_fits_the_messages_apis_strict_subset() -> None:
    strict = anthropic.transform_schema(envelope_schema())
    objects = [s for s in walk(strict) if s.get("type") == "object"]
    assert objects
    assert all(s["additionalProperties"] is False for s in objects)
    unsupported = {"minimum", "maximum", "pattern", "minLength", "maxLength", "maxItems"}
    assert not [s for s in walk(strict) if unsupported & set(s)]
    kinds = sorted(
        s["properties"]["kind"]["const"]
        for s in strict["$defs"].values()
        if "kind" in s.get("properties", {})
    )
    assert kinds == ["clarify", "error", "plan", "reply", "tool", "tools"]
    # What the transform took out of the schema, it wrote into the descriptions.
    confidence = strict["$defs"]["ReplyEnvelope"]["properties"]["confidence"]
    assert "maximum: 1" in confidence["description"]


def test_the_engine_does_not_import_the_anthropic_sdk_unless_asked_to() -> None:
    """It adds about 42 MB to the gateway: only an Anthropic planner brings it in."""
    probe = (
        "import sys, gateway.engine.loop, gateway.engine.planners.scripted; "
        "print('anthropic' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


def test_a_sampled_answer_nested_past_the_parser_is_text_for_a_repair() -> None:
    from gateway.engine.planners.sampling import _parsed

    deep = "[" * 100_000
    assert _parsed(deep) == deep, "shown back to the model, not an internal error"
