"""Resolution: which tags apply and why, tools, denials, scopes, flows, prompt order."""

from __future__ import annotations

from gateway.principal import Principal
from gateway.tags import Outcome, ResolvedContext, check, resolve
from gateway.tags.model import TagKind
from tests.conftest import tagset, who

ACME = """
users:
  alice: {roles: [agent]}
  bob: {roles: [agent, lead]}
  dave: {roles: [intern]}
  zed: {}
tags:
  - tag: company_acme
    kind: company
    payload:
      meta: {title: Acme}
      config: {assigned_users: ["*"]}
      content: Company text.
  - tag: role_agent
    kind: role
    payload:
      meta: {title: Agent, includes: [fn_lookup, fn_refunds]}
      config: {assigned_roles: [agent]}
      content: Agent text.
  - tag: role_lead
    kind: role
    payload:
      meta: {title: Lead, priority: 10, includes: [tool_refund_large]}
      config: {assigned_roles: [lead]}
      content: Lead text.
  - tag: role_intern
    kind: role
    payload:
      meta: {title: Intern, includes: [fn_lookup]}
      config:
        assigned_roles: [intern]
        denied_tools: ["payments__*"]
      content: Intern text.
  - tag: fn_lookup
    kind: function
    payload:
      meta: {title: Lookup}
      config: {allowed_tools: ["crm__get_*", payments__get_payment]}
      content: Lookup text.
  - tag: fn_refunds
    kind: function
    payload:
      meta: {title: Refunds, intents: [refund], includes: [tool_refund_small, flow_refund]}
      content: Refund text.
  - tag: tool_refund_small
    kind: tool
    payload:
      meta: {title: Small refunds}
      config:
        allowed_tools: [payments__refund]
        scopes:
          payments__refund:
            amount: {required: true, max: 100}
  - tag: tool_refund_large
    kind: tool
    payload:
      meta: {title: Large refunds}
      config:
        allowed_tools: [payments__refund]
        scopes:
          payments__refund:
            amount: {required: true, max: 1000}
  - tag: flow_refund
    kind: flow
    payload:
      meta: {title: Refund flow, intents: [refund]}
      content:
        description: Refund an order.
        steps:
          - {id: look, tool: crm__get_order, description: Look it up}
          - {id: pay, tool: payments__refund}
  - tag: tool_only_by_name
    kind: tool
    payload:
      config:
        assigned_users: [alice]
        allowed_tools: [mail__send]
"""

GLOBEX = """
users:
  alice: {roles: [agent]}
tags:
  - tag: role_agent
    kind: role
    payload:
      config: {assigned_roles: [agent], allowed_tools: [globex__only]}
"""


def test_every_kind_applies_with_its_reason() -> None:
    context = resolve(tagset(acme=ACME), who("alice"))
    reasons = {t.name: t.reasons for t in context.tags}
    assert reasons == {
        "company_acme": ("org-wide (assigned_users: '*')",),
        "role_agent": ("assigned role agent",),
        "fn_lookup": ("included by role_agent",),
        "fn_refunds": ("included by role_agent",),
        "tool_refund_small": ("included by fn_refunds",),
        "tool_only_by_name": ("assigned user alice",),
        "flow_refund": ("included by fn_refunds",),
    }
    assert {t.kind for t in context.tags} == set(TagKind)
    assert context.role_source == "org file"
    assert context.roles == ("agent",)
    assert context.tags[0].where == "acme.yaml:8"


def test_includes_are_transitive_and_every_includer_is_named() -> None:
    context = resolve(tagset(acme=ACME), who("bob"))
    reasons = {t.name: t.reasons for t in context.tags}
    assert reasons["tool_refund_small"] == ("included by fn_refunds",)
    assert reasons["tool_refund_large"] == ("included by role_lead",)
    assert reasons["fn_lookup"] == ("included by role_agent",)


def test_order_is_kind_then_priority_then_name() -> None:
    context = resolve(tagset(acme=ACME), who("bob"))
    assert [t.name for t in context.tags] == [
        "company_acme",
        "role_lead",  # priority 10 before 0
        "role_agent",
        "fn_lookup",
        "fn_refunds",
        "tool_refund_large",
        "tool_refund_small",
        "flow_refund",
    ]
    assert [s.tag for s in context.sections] == [
        "company_acme",
        "role_lead",
        "role_agent",
        "fn_lookup",
        "fn_refunds",
        "flow_refund",
    ]
    assert context.prompt.startswith("## Acme\n\nCompany text.\n\n## Lead\n\nLead text.\n\n")
    assert context.prompt.endswith(
        "## Refund flow\n\nRefund an order.\n"
        'Run it with a plan envelope that names it: flow "flow_refund", with its inputs. '
        "Steps:\n1. Look it up (tool crm__get_order)\n2. pay (tool payments__refund)"
    )


def test_grants_denials_and_scopes_are_traced_to_tags() -> None:
    context = resolve(tagset(acme=ACME), who("bob"))
    grants = {(r.pattern, r.tag) for r in context.grants}
    assert ("payments__refund", "tool_refund_small") in grants
    assert ("payments__refund", "tool_refund_large") in grants
    assert ("crm__get_*", "fn_lookup") in grants
    assert [(r.tag, r.glob.pattern) for r in context.scopes] == [
        ("tool_refund_large", "payments__refund"),
        ("tool_refund_small", "payments__refund"),
    ]
    assert [f.tag for f in context.flows] == ["flow_refund"]
    assert [s.id for s in context.flows[0].steps] == ["look", "pay"]


def test_grants_are_alternatives() -> None:
    config = tagset(acme=ACME)
    alice, bob = resolve(config, who("alice")), resolve(config, who("bob"))
    decision = check(alice, "payments__refund", {"amount": 250})
    assert decision.outcome is Outcome.OUT_OF_SCOPE
    assert decision.reason == "amount 250 exceeds max 100 set by tag tool_refund_small"
    decision = check(bob, "payments__refund", {"amount": 250})
    assert decision.allowed
    assert decision.admitted_by == "tool_refund_large"
    assert decision.reason == "granted by tag tool_refund_large; arguments within its scope"
    decision = check(bob, "payments__refund", {"amount": 2500})
    assert decision.outcome is Outcome.OUT_OF_SCOPE
    assert decision.reason == (
        "none of the 2 tags granting payments__refund admits these arguments: "
        "amount 2500 exceeds max 1000 set by tag tool_refund_large; "
        "amount 2500 exceeds max 100 set by tag tool_refund_small"
    )
    assert [v.tag for v in decision.violations] == ["tool_refund_large", "tool_refund_small"]


def test_a_grant_without_scope_admits_any_arguments() -> None:
    context = resolve(tagset(acme=ACME), who("alice"))
    decision = check(context, "crm__get_customer", {"anything": [1, 2, 3]})
    assert decision.allowed
    assert decision.reason == "granted by tag fn_lookup; it sets no argument scope"


def test_deny_beats_allow() -> None:
    context = resolve(tagset(acme=ACME), who("dave"))
    # fn_lookup grants payments__get_payment, role_intern denies payments__*
    decision = check(context, "payments__get_payment", {})
    assert decision.outcome is Outcome.DENIED
    assert decision.granted_by == ("fn_lookup",)
    assert decision.denied_by == ("role_intern",)
    assert decision.reason == (
        "payments__get_payment is denied by tag role_intern (denied_tools: payments__*); "
        "a denial wins over any grant"
    )
    assert check(context, "payments__get_payment").outcome is Outcome.DENIED
    assert check(context, "crm__get_customer").allowed


def test_deny_in_a_tag_applied_with_another_role_still_wins() -> None:
    context = resolve(tagset(acme=ACME), who("bob", "acme", "lead", "intern"))
    assert check(context, "payments__refund", {"amount": 1}).outcome is Outcome.DENIED


def test_not_granted() -> None:
    context = resolve(tagset(acme=ACME), who("alice"))
    decision = check(context, "payments__delete_account", {})
    assert decision.outcome is Outcome.NOT_GRANTED
    assert decision.reason == "no applied tag grants payments__delete_account"


def test_unknown_user_org_or_nobody_gets_nothing() -> None:
    config = tagset(acme=ACME)
    for principal, note in [
        (who("mallory"), "user 'mallory' is not known in org 'acme'"),
        (who("alice", "initech"), "org 'initech' is not configured"),
    ]:
        context = resolve(config, principal)
        assert context.tags == ()
        assert context.grants == ()
        assert context.prompt == ""
        assert context.note == note
        decision = check(context, "crm__get_customer", {})
        assert decision.outcome is Outcome.NOT_GRANTED
        assert decision.reason == note
    # A known user with no roles gets org-wide tags only: no tools here.
    zed = resolve(config, who("zed"))
    assert [t.name for t in zed.tags] == ["company_acme"]
    assert zed.grants == ()


def test_roles_from_an_identity_provider_replace_the_files_roles() -> None:
    config = tagset(acme=ACME)
    context = resolve(config, who("alice", "acme", "intern"))
    assert context.role_source == "identity provider"
    assert "role_agent" not in {t.name for t in context.tags}
    assert "role_intern" in {t.name for t in context.tags}
    # A user the file does not list, vouched for by the IdP, is known.
    context = resolve(config, who("newhire", "acme", "agent"))
    assert "role_agent" in {t.name for t in context.tags}


def test_org_isolation() -> None:
    config = tagset(acme=ACME, globex=GLOBEX)
    acme = resolve(config, who("alice", "acme"))
    globex = resolve(config, who("alice", "globex"))
    assert {r.pattern for r in globex.grants} == {"globex__only"}
    assert all(t.where.startswith("globex.yaml") for t in globex.tags)
    assert not check(acme, "globex__only").allowed
    assert not check(globex, "crm__get_customer").allowed


def test_shared_tags_apply_only_in_their_orgs() -> None:
    shared = """
    tags:
      - tag: shared_clock
        kind: tool
        payload:
          config:
            org_scope: ["*"]
            assigned_users: ["*"]
            allowed_tools: ["time__*"]
      - tag: shared_acme_only
        kind: tool
        payload:
          config:
            org_scope: [acme]
            assigned_roles: [agent]
            allowed_tools: [docs__search]
    """
    config = tagset(acme=ACME, globex=GLOBEX, _shared=shared)
    acme = resolve(config, who("alice", "acme"))
    globex = resolve(config, who("alice", "globex"))
    assert check(acme, "time__now").allowed
    assert check(globex, "time__now").allowed
    assert check(acme, "docs__search").allowed
    assert not check(globex, "docs__search").allowed
    assert "shared_acme_only" not in config.orgs["globex"].tags


def names(context: ResolvedContext) -> set[str]:
    return {t.name for t in context.tags}


def test_intent_narrows_and_never_widens() -> None:
    config = tagset(acme=ACME)
    everything = resolve(config, who("alice"))
    refund = resolve(config, who("alice"), "refund")
    other = resolve(config, who("alice"), "billing")
    assert names(refund) == names(everything)
    assert names(other) == names(everything) - {"fn_refunds", "tool_refund_small", "flow_refund"}
    assert [(s.name, s.reason) for s in other.skipped] == [
        ("fn_refunds", "intents refund do not include 'billing'")
    ]
    assert not check(other, "payments__refund", {"amount": 1}).allowed
    assert [f.tag for f in refund.flows] == ["flow_refund"]
    assert other.flows == ()


def test_resolution_is_deterministic() -> None:
    config = tagset(acme=ACME)
    first = resolve(config, who("bob", "acme", "lead", "agent"))
    second = resolve(config, who("bob", "acme", "agent", "lead", "agent"))
    assert first.tags == second.tags
    assert first.prompt == second.prompt
    assert first.grants == second.grants


def test_context_is_bound_to_its_version() -> None:
    config = tagset(acme=ACME)
    assert resolve(config, Principal("alice", "acme")).version == config.version
