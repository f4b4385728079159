"""Property tests of the Tag Manager over random, valid tag configurations.

Each example builds the YAML files of two orgs (`acme`, `globex`) and a shared file as
Python data, dumps them with `yaml.safe_dump` and loads them exactly as the gateway does.
The invariants are checked for a fixed set of principals and intents, against every tool of
a small universe (exact names and names only reached through globs such as `crm__*`) and a
few argument dicts. Expectations are computed from the generated data with `fnmatch`, not
with the gateway's own matching.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
from collections.abc import Iterator, Mapping
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.principal import Principal
from gateway.tags.context import ResolvedContext
from gateway.tags.loader import TagSet, tagset_from_texts
from gateway.tags.model import ORG_WIDE, TagKind
from gateway.tags.policy import Decision, Outcome, check
from gateway.tags.resolve import resolve

Data = dict[str, Any]
Files = dict[str, Data]
"""File stem (`acme`, `globex`, `_shared`) → the YAML document as Python data."""

ORGS = ("acme", "globex")
SHARED = "_shared"
USERS = ("alice", "bob", "carol")
STRANGER = "mallory"
"""Never in an org file: only known through identity-provider roles (or not at all)."""
ROLES = ("agent", "admin", "finance")
INTENTS = ("refund", "billing")
TOOLS = (
    "crm__get",
    "crm__update",
    "crm__delete",
    "crm__merge",
    "payments__refund",
    "payments__void",
    "mail__send",
    "admin__reset",
    "other__thing",
)
GLOBS = ("crm__*", "payments__*", "*__delete", "mail__s?nd", "crm__[gu]*", "*")
PATTERNS = ("crm__get", "crm__delete", "payments__refund", "mail__send", "admin__reset", *GLOBS)
ARGUMENT_NAMES = ("amount", "note")
SHARED_SCOPES = (("*",), ("acme",), ("globex",), ("acme", "globex"), ("globex", "*"))
PRINCIPALS = tuple(
    Principal(user_id=user, org_id=org, roles=roles)
    for org in ORGS
    for user, roles in (
        ("alice", ()),
        ("bob", ()),
        ("carol", ()),
        ("alice", ("admin", "finance")),  # roles from an identity provider replace the file's
        (STRANGER, ("agent",)),  # unknown to the org, known to the identity provider
        (STRANGER, ()),  # unknown altogether: gets nothing
    )
)
QUERY_INTENTS = (None, "refund", "unlisted")

PROPERTY = settings(max_examples=100, deadline=None)


# --- generating valid configurations -------------------------------------------------------


def effective_orgs(org_scope: tuple[str, ...] | list[str]) -> frozenset[str]:
    return frozenset(ORGS) if ORG_WIDE in org_scope else frozenset(org_scope)


@functools.cache
def subsets(items: tuple[str, ...], max_size: int) -> st.SearchStrategy[list[str]]:
    """Cached: building strategies anew for every draw costs more than the test itself."""
    return st.lists(st.sampled_from(items), unique=True, max_size=max_size)


def subset(draw: st.DrawFn, items: tuple[str, ...] | list[str], max_size: int) -> list[str]:
    return draw(subsets(tuple(items), max_size)) if items else []


SHAPES = st.sampled_from(["min", "max", "range", "enum", "required", "req_max", "no"])
BOUNDS = st.tuples(st.integers(min_value=0, max_value=10), st.integers(min_value=0, max_value=10))
ENUMS = st.lists(st.sampled_from([0, 1, 5, 10, "x", "5"]), min_size=1, max_size=3, unique=True)


@st.composite
def constraints(draw: st.DrawFn) -> Data:
    """One ArgumentConstraint that the model accepts (coherent bounds, no forbidden+other)."""
    shape = draw(SHAPES)
    low, high = sorted(draw(BOUNDS))
    if shape == "min":
        return {"min": low}
    if shape == "max":
        return {"max": high}
    if shape == "range":
        return {"min": low, "max": high}
    if shape == "enum":
        return {"enum": draw(ENUMS)}
    if shape == "required":
        return {"required": True}
    if shape == "req_max":
        return {"required": True, "max": high}
    return {"forbidden": True}


def scope_keys(allowed: list[str]) -> list[str]:
    """Scope keys that the tag's own allowed_tools grant: its patterns and tools they match."""
    keys = set(allowed)
    keys.update(t for t in TOOLS if matches(t, allowed))
    return sorted(keys)


KINDS = st.sampled_from(list(TagKind))
NO_DENIALS: list[str] = []
DENIALS = st.one_of(st.just(NO_DENIALS), st.just(NO_DENIALS), subsets(PATTERNS, 2))
"""Most tags deny nothing, so that grants get a chance."""
PRIORITIES = st.integers(min_value=-2, max_value=2)
ARGUMENT_SCOPES = st.dictionaries(st.sampled_from(ARGUMENT_NAMES), constraints(), min_size=1)


@functools.cache
def tool_scopes(keys: tuple[str, ...]) -> st.SearchStrategy[dict[str, Data]]:
    return st.dictionaries(st.sampled_from(keys), ARGUMENT_SCOPES, max_size=2)


def draw_tag(
    draw: st.DrawFn, name: str, includable: list[str], org_scope: list[str] | None
) -> Data:
    """One valid tag: its scopes are keyed only by what its own allowed_tools grant."""
    kind = draw(KINDS)
    allowed = subset(draw, PATTERNS, 3)
    keys = scope_keys(allowed)
    config: Data = {
        "assigned_users": subset(draw, (*USERS, STRANGER, ORG_WIDE), 2),
        "assigned_roles": subset(draw, ROLES, 2),
        "allowed_tools": allowed,
        "denied_tools": draw(DENIALS),
        "scopes": draw(tool_scopes(tuple(keys))) if keys else {},
    }
    if org_scope is not None:
        config["org_scope"] = org_scope
    meta: Data = {
        "priority": draw(PRIORITIES),
        "includes": subset(draw, includable, 2),
        "intents": subset(draw, INTENTS, 2),
        "title": f"Title of {name}" if draw(st.booleans()) else "",
    }
    content: str | Data
    if kind is TagKind.FLOW:
        steps = subset(draw, TOOLS, 2) or [TOOLS[0]]
        content = {"steps": [{"id": f"step{i}", "tool": t} for i, t in enumerate(steps)]}
    else:
        content = ["", f"Guidance from {name}.", f"  {name}: be brief.\n"][draw(TEXTS)]
    payload = {
        "meta": {k: v for k, v in meta.items() if v},
        "config": {k: v for k, v in config.items() if v},
        "content": content,
    }
    return {"tag": name, "kind": kind.value, "payload": payload}


TEXTS = st.integers(min_value=0, max_value=2)
USER_ROLES = st.dictionaries(st.sampled_from(USERS), subsets(ROLES, 2), max_size=3)
TAG_COUNTS = st.integers(min_value=0, max_value=5)


@st.composite
def configs(draw: st.DrawFn) -> Files:
    """Valid files: names unique per org namespace, includes acyclic and resolvable.

    Both orgs name their tags `o0`, `o1`, ... so that a leak across orgs would show. Shared
    tags are `s0`, `s1`, ...; a shared tag includes only later shared tags serving at least
    its orgs, an org tag only later tags of its own file or shared tags serving its org.
    """
    shared_scopes = draw(st.lists(st.sampled_from(SHARED_SCOPES), max_size=3))
    shared: list[Data] = []
    for i, scope in enumerate(shared_scopes):
        reach = effective_orgs(scope)
        includable = [
            f"s{j}"
            for j in range(i + 1, len(shared_scopes))
            if effective_orgs(shared_scopes[j]) >= reach
        ]
        shared.append(draw_tag(draw, f"s{i}", includable, list(scope)))
    files: Files = {SHARED: {"tags": shared}} if shared else {}
    for org in ORGS:
        users = draw(USER_ROLES)
        in_scope = [
            f"s{i}" for i, scope in enumerate(shared_scopes) if org in effective_orgs(scope)
        ]
        count = draw(TAG_COUNTS)
        own: list[Data] = []
        for i in range(count):
            includable = [f"o{j}" for j in range(i + 1, count)] + in_scope
            org_scope = [org] if draw(st.booleans()) else None
            own.append(draw_tag(draw, f"o{i}", includable, org_scope))
        files[org] = {
            "org": org,
            "users": {user: {"roles": roles} for user, roles in users.items()},
            "tags": own,
        }
    return files


SafeDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
"""yaml.safe_dump's dumper, in C when PyYAML has libyaml (dumping dominates otherwise)."""


def texts(files: Files) -> dict[str, str]:
    return {
        f"{stem}.yaml": yaml.dump(data, Dumper=SafeDumper, sort_keys=False)
        for stem, data in files.items()
    }


def load(files: Files) -> TagSet:
    return tagset_from_texts(texts(files))


def namespace(files: Files, org: str) -> dict[str, tuple[str, Data]]:
    """The tags that may apply in `org`: name → (defining file, tag data)."""
    found = {tag["tag"]: (f"{org}.yaml", tag) for tag in files[org]["tags"]}
    for tag in files.get(SHARED, {"tags": []})["tags"]:
        if org in effective_orgs(tag["payload"]["config"]["org_scope"]):
            assert tag["tag"] not in found
            found[tag["tag"]] = (f"{SHARED}.yaml", tag)
    return found


def without(files: Files, stem: str, name: str) -> Files:
    """`files` without tag `name` of file `stem`, and without every include of it."""
    reduced = copy.deepcopy(files)
    reduced[stem]["tags"] = [t for t in reduced[stem]["tags"] if t["tag"] != name]
    # An org tag is only included from its own file; a shared one from anywhere.
    referrers = [stem] if stem != SHARED else list(reduced)
    for other in referrers:
        for tag in reduced[other]["tags"]:
            meta = tag["payload"].get("meta", {})
            if name in meta.get("includes", []):
                meta["includes"] = [i for i in meta["includes"] if i != name]
    return reduced


ARGUMENT_VALUES = st.one_of(
    st.integers(min_value=-1, max_value=12),
    st.sampled_from(["x", "5", ""]),
    st.none(),
    st.booleans(),
)
ARGUMENT_DICTS = st.lists(
    st.dictionaries(st.sampled_from(ARGUMENT_NAMES), ARGUMENT_VALUES), max_size=3
)


@st.composite
def argument_sets(draw: st.DrawFn) -> list[Mapping[str, Any] | None]:
    """None (a listing), {} (a call without arguments) and a few drawn argument dicts."""
    return [None, {}, *draw(ARGUMENT_DICTS)]


def matches(tool: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(tool, pattern) for pattern in patterns)


def contexts(tagset: TagSet) -> Iterator[ResolvedContext]:
    for principal in PRINCIPALS:
        for intent in QUERY_INTENTS:
            yield resolve(tagset, principal, intent)


def decisions(
    context: ResolvedContext, arguments: list[Mapping[str, Any] | None]
) -> list[Decision]:
    return [check(context, tool, args) for tool in TOOLS for args in arguments]


# --- the invariants ------------------------------------------------------------------------


@PROPERTY
@given(data=st.data(), files=configs(), arguments=argument_sets())
def test_removing_a_tag_never_grants_more(
    data: st.DataObject, files: Files, arguments: list[Mapping[str, Any] | None]
) -> None:
    """Fewer tags, fewer rights, with one exception by design: a removed denial.

    Removing a tag also removes its `denied_tools` (and those of tags only it included), so
    a call that was DENIED may become allowed; then every tag that denied it must be gone.
    Anything else that becomes allowed (a NOT_GRANTED or OUT_OF_SCOPE call) is a breach.
    """
    candidates = [
        (stem, tag["tag"]) for stem, document in files.items() for tag in document["tags"]
    ]
    if not candidates:
        return
    stem, name = data.draw(st.sampled_from(candidates), label="removed")
    before_set, after_set = load(files), load(without(files, stem, name))
    for before, after in zip(contexts(before_set), contexts(after_set), strict=True):
        org = before.principal.org_id
        before_tags = {t.name for t in before.tags}
        after_tags = {t.name for t in after.tags}
        removed_here = name if stem in (org, SHARED) else None
        assert after_tags <= before_tags - {removed_here}, (before.principal, before.intent)
        for tool in TOOLS:
            for args in arguments:
                was, now = check(before, tool, args), check(after, tool, args)
                if not now.allowed or was.allowed:
                    continue
                assert was.outcome is Outcome.DENIED, (before.principal, tool, args, was, now)
                assert not set(was.denied_by) & after_tags, (before.principal, tool, was, now)


@PROPERTY
@given(files=configs())
def test_a_tag_never_applies_outside_its_org(files: Files) -> None:
    tagset = load(files)
    outsider = Principal(user_id="alice", org_id="initech", roles=ROLES)
    assert resolve(tagset, outsider).tags == ()
    for context in contexts(tagset):
        org = context.principal.org_id
        visible = namespace(files, org)
        for applied in context.tags:
            assert applied.name in visible, (context.principal, applied)
            source, tag = visible[applied.name]
            assert applied.where.rsplit(":", 1)[0] == source, (context.principal, applied)
            assert applied.kind.value == tag["kind"]
            assert applied.priority == tag["payload"].get("meta", {}).get("priority", 0)
            if source == f"{SHARED}.yaml":
                scope = tag["payload"]["config"]["org_scope"]
                assert org in scope or ORG_WIDE in scope, (context.principal, applied, scope)
            else:
                assert source == f"{org}.yaml"


@PROPERTY
@given(files=configs(), arguments=argument_sets())
def test_deny_always_wins(files: Files, arguments: list[Mapping[str, Any] | None]) -> None:
    """A tool that an applied tag denies is never allowed, whatever grants and arguments;
    and a granted, undenied tool is always listed (so the property is not won by denying
    everything)."""
    tagset = load(files)
    for context in contexts(tagset):
        visible = namespace(files, context.principal.org_id)
        applied = [visible[t.name][1]["payload"]["config"] for t in context.tags]
        for tool in TOOLS:
            denied = any(matches(tool, config.get("denied_tools", [])) for config in applied)
            granted = any(matches(tool, config.get("allowed_tools", [])) for config in applied)
            for args in arguments:
                decision = check(context, tool, args)
                if denied:
                    assert not decision.allowed, (context.principal, tool, args, decision)
                    assert decision.outcome is Outcome.DENIED
                elif not granted:
                    assert decision.outcome is Outcome.NOT_GRANTED, (tool, decision)
                elif args is None:
                    assert decision.allowed, (context.principal, tool, decision)


def summary(context: ResolvedContext) -> tuple[Any, ...]:
    """Everything resolution says, except file lines (which move when tags are reordered)."""
    return (
        context.prompt,
        tuple((t.name, t.kind, t.title, t.priority, t.reasons) for t in context.tags),
        context.skipped,
        context.grants,
        context.denials,
        context.scopes,
        context.flows,
        context.sections,
        context.roles,
        context.note,
    )


@PROPERTY
@given(data=st.data(), files=configs(), arguments=argument_sets())
def test_resolution_is_deterministic(
    data: st.DataObject, files: Files, arguments: list[Mapping[str, Any] | None]
) -> None:
    tagset = load(files)
    shuffled = copy.deepcopy(files)
    for stem in sorted(shuffled):
        document = shuffled[stem]
        document["tags"] = data.draw(st.permutations(document["tags"]), label=f"{stem} tags")
        if "users" in document:
            order = data.draw(st.permutations(sorted(document["users"])), label=f"{stem} users")
            document["users"] = {user: document["users"][user] for user in order}
    reordered = tagset_from_texts(dict(reversed(texts(shuffled).items())))
    for principal in PRINCIPALS:
        for intent in QUERY_INTENTS:
            first = resolve(tagset, principal, intent)
            again = resolve(tagset, principal, intent)
            other = resolve(reordered, principal, intent)
            assert first == again
            assert first.tags == again.tags
            assert summary(first) == summary(other), (principal, intent)
            expected = decisions(first, arguments)
            assert decisions(again, arguments) == expected
            assert decisions(other, arguments) == expected, (principal, intent)


# --- examples the generator once found ----------------------------------------------------


def test_scope_keyed_by_the_tags_own_bracket_glob_loads() -> None:
    """A bracket glob overlaps itself (ToolGlob.overlaps once said it did not)."""
    text = yaml.safe_dump(
        {
            "tags": [
                {
                    "tag": "t",
                    "kind": "tool",
                    "payload": {
                        "config": {
                            "allowed_tools": ["crm__[gu]*"],
                            "scopes": {"crm__[gu]*": {"amount": {"max": 5}}},
                        }
                    },
                }
            ]
        }
    )
    loaded = tagset_from_texts({"acme.yaml": text})
    assert "t" in loaded.orgs["acme"].tags
