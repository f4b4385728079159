"""What the second review of flows found, one test each: a flow whose tools need the
user's approval waits for it before its first step; a grant of gateway__* reaches no other
org's flow, nor a denied one from any door; two flows of one org cannot be one tool;
templates nested past the parser are a load error; what learning keeps of a plan holds
none of its values, and what no template can say is no candidate."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from gateway.engine.envelopes import PlanEnvelope
from gateway.engine.states import SessionState
from gateway.errors import ConfigError, UnknownFlow
from gateway.flows.learning import NotAFlow, abstracted
from gateway.principal import Principal
from gateway.tags.loader import tagset_from_texts
from gateway.tags.policy import check
from gateway.tags.resolve import resolve
from gateway.tags.templates import TemplateProblem, template
from tests.engine.helpers import Bench, envelope
from tests.flows.helpers import ROLE, caller, flow_tag, org_text, run_flow, tally

pytestmark = pytest.mark.anyio

SUM = flow_tag("flow_sum", {"steps": [{"id": "a", "tool": "ops__add", "args": {"a": 1, "b": 2}}]})


def careful(*tags: dict[str, Any]) -> Any:
    role = {**ROLE, "payload": {**ROLE["payload"]}}
    role["payload"]["config"] = {**ROLE["payload"]["config"], "needs_approval": ["ops__add"]}
    data = {"users": {"alice": {"roles": ["agent"]}}, "tags": [role, *tags]}
    tagset = tagset_from_texts({"acme.yaml": yaml.safe_dump(data, sort_keys=False)})
    return resolve(tagset, Principal("alice", "acme"))


@pytest.mark.parametrize("verdict", ["approve", "reject"])
async def test_a_flow_whose_tool_needs_approval_waits_before_its_first_step(
    bench: Bench, verdict: str
) -> None:
    alice = careful(SUM)
    asked = await run_flow(bench, alice, "flow_sum")
    assert (asked.state, asked.waiting) == (SessionState.INPUT_REQUIRED, "approval")
    assert asked.text is not None
    assert "runs ops__add, which your tags say need your approval" in asked.text
    assert "add" not in (await tally(bench, alice))["calls"]
    engine = bench.engine(None)
    done = await engine.respond(asked, alice, verdict, "")  # type: ignore[arg-type]
    if verdict == "approve":
        assert done.state is SessionState.COMPLETED, done.text
        assert (await tally(bench, alice))["calls"] == {"add": 1}
    else:
        assert (done.state, done.text) == (
            SessionState.FAILED,
            "the user did not approve the flow 'flow_sum'",
        )
        assert "add" not in (await tally(bench, alice))["calls"]


def test_a_grant_of_every_own_tool_reaches_no_flow_of_another_org() -> None:
    acme = yaml.safe_load(org_text(SUM))
    initech = {
        "users": {"ivan": {"roles": ["admin"]}},
        "tags": [
            {
                "tag": "admin",
                "kind": "role",
                "payload": {"config": {"assigned_roles": ["admin"], "allowed_tools": ["*"]}},
            }
        ],
    }
    tagset = tagset_from_texts(
        {"acme.yaml": yaml.safe_dump(acme), "initech.yaml": yaml.safe_dump(initech)}
    )
    ivan = resolve(tagset, Principal("ivan", "initech"))
    decision = check(ivan, "gateway__flow__sum", {})
    assert (decision.allowed, decision.outcome.value) == (False, "not_granted")
    alice = resolve(tagset, Principal("alice", "acme"))
    assert check(alice, "gateway__flow__sum", {}).allowed


async def test_a_denied_flow_tool_is_denied_at_every_door(bench: Bench) -> None:
    deny = {
        "tag": "no_sum",
        "kind": "function",
        "payload": {
            "config": {"assigned_users": ["alice"], "denied_tools": ["gateway__flow__sum"]}
        },
    }
    alice = caller(SUM, deny)
    with pytest.raises(UnknownFlow):
        await run_flow(bench, alice, "flow_sum")


def test_two_flows_of_one_org_cannot_be_one_tool() -> None:
    steps = {"steps": [{"id": "a", "tool": "ops__add"}]}
    with pytest.raises(ConfigError) as caught:
        tagset_from_texts({"acme.yaml": org_text(flow_tag("flow_x", steps), flow_tag("x", steps))})
    (issue,) = caught.value.issues
    assert "flow tags 'flow_x'" in str(issue)
    assert "and 'x' would both be the tool gateway__flow__x: rename one" in str(issue)


@pytest.mark.parametrize(
    "source",
    ["{{ steps.a.structured" + "[0]" * 1200 + " }}", "{{ " + "(" * 1200 + "1" + ")" * 1200 + " }}"],
)
def test_a_template_nested_past_the_parser_is_a_problem(source: str) -> None:
    with pytest.raises(TemplateProblem, match=r"\.\.\. \(\d+ characters\) is nested too deep"):
        template(source, ["steps"])


def plan(*steps: dict[str, Any]) -> PlanEnvelope:
    return PlanEnvelope.model_validate(envelope("plan", goal="g", steps=list(steps)))


def test_a_candidate_keeps_no_value_of_the_plan() -> None:
    secret = "sk_live_SECRET_TOKEN_123"
    shape, candidate = abstracted(
        plan(
            {
                "id": "a",
                "tool": "ops__echo",
                "arguments": json.dumps({"token": secret, "a.b": 1, "a_b": 2}),
            },
            {
                "id": "b",
                "tool": "ops__echo",
                "arguments": json.dumps(
                    {"list": [1, {"$step": "a", "path": "/structuredContent/args"}]}
                ),
            },
        )
    )
    assert secret not in json.dumps(candidate)
    assert candidate["inputs"] == {
        "s1_token": {"type": "string"},
        "s1_a_b": {"type": "integer"},
        "s1_a_b_2": {"type": "integer"},
        "s2_list_0": {"type": "integer"},
    }
    assert candidate["steps"][1]["args"] == {
        "list": ["{{ input.s2_list_0 }}", "{{ steps.s1.structured.args }}"]
    }
    assert shape


@pytest.mark.parametrize("path", ["", "/_meta/x", 5])
def test_a_reference_no_template_can_say_is_no_candidate(path: Any) -> None:
    reference = {"$step": "a", "path": path}
    with pytest.raises(NotAFlow):
        abstracted(
            plan(
                {"id": "a", "tool": "ops__echo", "arguments": "{}"},
                {"id": "b", "tool": "ops__echo", "arguments": json.dumps({"x": reference})},
            )
        )
