"""The tag schema: what an org's YAML file may say, validated strictly.

Every model (a `gateway.strict.Strict`) rejects unknown fields and does no type coercion,
so a typo or a YAML surprise (`version: 1.10` read as a float, `no` read as false) is an
error naming the field instead of a silent change of meaning. Models are frozen: a loaded
config is shared by every request and must not change under them.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    Discriminator,
    Field,
    JsonValue,
    StringConstraints,
    model_validator,
)
from pydantic import Tag as UnionMember

from ..linear_regex import LinearPattern, PatternError
from ..strict import Strict

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
"""Tag, org, user and role names: what SEP-986 allows for tool names, without a leading dot."""

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
ToolPattern = Annotated[str, StringConstraints(min_length=1, max_length=256)]
"""An exact tool name or a glob (`*`, `?`, `[...]`) over namespaced tool names."""

JsonScalar = str | int | float | bool | None
Number = int | float

# YAML gives lists; frozen models keep tuples. Only the container is lax: items stay strict.
Names = Annotated[tuple[Name, ...], Field(strict=False)]
Texts = Annotated[tuple[str, ...], Field(strict=False)]
ToolPatterns = Annotated[tuple[ToolPattern, ...], Field(strict=False)]


class TagKind(StrEnum):
    COMPANY = "company"
    ROLE = "role"
    FUNCTION = "function"
    TOOL = "tool"
    FLOW = "flow"


KIND_ORDER: dict[TagKind, int] = {kind: index for index, kind in enumerate(TagKind)}
"""The order of prompt sections: company, role, function, tool, flow."""

ORG_WIDE = "*"
"""`assigned_users: ["*"]` applies a tag to every known user of the org."""


class ArgumentConstraint(Strict):
    """Constraints on one argument of a tool call, addressed by a dotted path.

    A present argument must satisfy all of them. `min`/`max` apply to numbers, `max_length`
    to strings and arrays, `pattern` (a full match) to strings, `enum` and `const` to any
    JSON value, compared with its type (so `1`, `1.0` and `true` are not confused).

    An absent argument is checked as the value the upstream will use: the call is given
    the default the tool's inputSchema declares before it is checked (and sent with it).
    Absent with no declared default, it fails `required` and every value check, since the
    upstream may fill in a value of its own that no check saw; `optional: true` says that
    leaving it out is fine. `forbidden` alone is passed by an absent argument.
    """

    min: Number | None = None
    max: Number | None = None
    enum: Annotated[tuple[JsonScalar, ...], Field(strict=False)] | None = None
    const: JsonValue = None
    pattern: str | None = None
    max_length: Annotated[int, Field(ge=0)] | None = None
    required: bool = False
    optional: bool = False
    """Leaving the argument out (with no default declared) passes the value checks."""
    forbidden: bool = False

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        for bound in (self.min, self.max):
            if bound is not None and not math.isfinite(bound):
                raise ValueError("min and max must be finite numbers")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        if self.enum is not None and not self.enum:
            raise ValueError("enum must list at least one value")
        if self.pattern is not None:
            try:
                LinearPattern(self.pattern)
            except PatternError as exc:
                shown = self.pattern if len(self.pattern) <= 60 else self.pattern[:57] + "..."
                raise ValueError(
                    f"pattern {shown!r} is not a regex RE2 can run ({str(exc)[:200]}): "
                    "backreferences and lookaround are not supported, so that matching a "
                    "caller's argument takes linear time"
                ) from exc
        if self.forbidden and (self.required or self.optional or self.has_value_checks):
            raise ValueError("a forbidden argument cannot have other constraints")
        if self.required and self.optional:
            raise ValueError("an argument cannot be both required and optional")
        return self

    @property
    def has_value_checks(self) -> bool:
        return any(
            value is not None
            for value in (self.min, self.max, self.enum, self.const, self.pattern, self.max_length)
        )


def _argument_path(path: str) -> str:
    if any(not segment for segment in path.split(".")):
        raise ValueError(f"argument path {path!r} has an empty part")
    return path


ArgumentPath = Annotated[str, StringConstraints(min_length=1), AfterValidator(_argument_path)]
ToolScope = dict[ArgumentPath, ArgumentConstraint]
"""Argument path (`amount`, `payment.amount`, `items.*.sku`) → its constraints."""


class TagMeta(Strict):
    title: str = ""
    description: str = ""
    priority: int = 0
    includes: Names = ()
    intents: Annotated[
        tuple[Annotated[str, StringConstraints(min_length=1)], ...], Field(strict=False)
    ] = ()
    version: str | int | None = None


class SessionBudgets(Strict):
    """Limits on the agent sessions of the users a tag applies to: each one given only
    tightens gateway.yaml's `engine.budgets` (the smallest of every applied tag's wins)."""

    turns: Annotated[int, Field(ge=1)] | None = None
    tool_calls: Annotated[int, Field(ge=1)] | None = None
    tokens: Annotated[int, Field(ge=1)] | None = None
    cost_usd: Annotated[float, Field(gt=0, strict=False)] | None = None
    wall_seconds: Annotated[float, Field(gt=0, strict=False)] | None = None
    call_timeout: Annotated[float, Field(gt=0, strict=False)] | None = None
    parallel: Annotated[int, Field(ge=1)] | None = None
    repeats: Annotated[int, Field(ge=1)] | None = None
    violations: Annotated[int, Field(ge=1)] | None = None
    """As gateway.yaml's: at least 1 (a budget the engine can hold)."""


class TagConfig(Strict):
    """The RBAC part of a tag."""

    assigned_users: Texts = ()
    assigned_roles: Names = ()
    org_scope: Texts = ()
    """Org ids, or '*' for every org (shared files only)."""
    allowed_tools: ToolPatterns = ()
    denied_tools: ToolPatterns = ()
    scopes: dict[ToolPattern, ToolScope] = Field(default_factory=dict)
    allowed_resources: ToolPatterns = ()
    """Resource URIs or URI templates (exact or globs) shown to the caller, besides the
    resources of every upstream of which it may use a tool."""
    allowed_prompts: ToolPatterns = ()
    """Prompt names (namespaced, exact or globs), likewise."""
    audit_arguments: bool = False
    """Record the arguments of calls to the tools this tag grants in the audit log in
    full; otherwise only their sha256 is kept."""
    trusted_output: ToolPatterns = ()
    """Tools (names or globs) whose results are trusted in an agent session: reading one
    does not taint it. Every other tool's result is untrusted."""
    needs_approval: ToolPatterns = ()
    """Tools whose calls in an agent session wait for the user's approval first."""
    session_budgets: SessionBudgets | None = None
    """Tighter limits for these users' agent sessions than gateway.yaml's."""

    @model_validator(mode="after")
    def _names(self) -> Self:
        for user in self.assigned_users:
            if user != ORG_WIDE and not re.match(NAME_PATTERN, user):
                raise ValueError(
                    f"assigned_users entry {user!r} is neither a user name nor '*' (every user)"
                )
        for org in self.org_scope:
            if org != ORG_WIDE and not re.match(NAME_PATTERN, org):
                raise ValueError(f"org_scope entry {org!r} is neither an org id nor '*'")
        return self


MAX_FLOW_STEPS = 1_000
"""Steps in one flow: a workflow of more is a program, not a flow."""

OnError = Literal["abort", "skip", "retry", "replan"]


class RetryPolicy(Strict):
    """How a step with `on_error: retry` is tried again: `attempts` in all (the first
    included), waiting `backoff` seconds before the second, twice that before the third,
    and so on, up to `max_backoff`."""

    attempts: Annotated[int, Field(ge=2, le=10)] = 3
    backoff: Annotated[float, Field(ge=0, le=60, strict=False)] = 0.5
    max_backoff: Annotated[float, Field(ge=0, le=300, strict=False)] = 30.0


class FlowStep(Strict):
    """One step of a flow (flows.py compiles and checks it)."""

    id: Name
    tool: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    description: str = ""
    args: dict[str, JsonValue] = Field(default_factory=dict)
    """The tool's arguments; a string may be a template over `input` and `steps`."""
    when: Annotated[str, StringConstraints(min_length=1)] | None = None
    """A condition: the step runs only when it is true, else it is skipped."""
    expect: Annotated[str, StringConstraints(min_length=1)] | None = None
    """A condition on the step's `result`: false counts as the step's failure."""
    after: Names = ()
    """Steps this one waits for, besides those its templates read."""
    on_error: OnError = "abort"
    retry: RetryPolicy | None = None
    """With `on_error: retry`: how (RetryPolicy's defaults when left out)."""
    retry_unsafe: bool = False
    """Retry a tool that is neither read-only nor idempotent (it may act twice)."""
    timeout: Annotated[float, Field(gt=0, le=3600, strict=False)] | None = None
    """Seconds the step's call may take (at most the session's call_timeout)."""

    @model_validator(mode="after")
    def _retry_fits(self) -> Self:
        if self.on_error != "retry" and self.retry is not None:
            raise ValueError(f"retry is set, but on_error is {self.on_error!r}, not 'retry'")
        if self.on_error != "retry" and self.retry_unsafe:
            raise ValueError("retry_unsafe applies only to a step with on_error: retry")
        return self


class FlowDefinition(Strict):
    """A flow tag's content: a workflow the gateway runs step by step, no model between."""

    description: str = ""
    inputs: dict[str, JsonValue] | None = None
    """A JSON Schema of the flow's input (an object), checked before step one."""
    steps: Annotated[tuple[FlowStep, ...], Field(max_length=MAX_FLOW_STEPS, strict=False)]
    output: JsonValue = None
    """What the flow answers: a template (or a mapping or list of them) over `input` and
    `steps`; left out, the last step's result text."""

    @model_validator(mode="before")
    @classmethod
    def _some_steps(cls, data: Any) -> Any:
        # Here, not as the field's min_length, which counts the steps that validated: a
        # flow whose one step has a mistake would be told it has none besides.
        if isinstance(data, dict) and data.get("steps") in ([], ()):
            raise ValueError("a flow needs at least one step")
        return data

    @model_validator(mode="after")
    def _unique_steps(self) -> Self:
        seen: set[str] = set()
        for step in self.steps:
            if step.id in seen:
                raise ValueError(f"step id {step.id!r} is used twice")
            seen.add(step.id)
        return self


def _content_kind(value: object) -> str:
    return "text-content" if isinstance(value, str) else "flow-content"


Content = Annotated[
    Annotated[str, UnionMember("text-content")]
    | Annotated[FlowDefinition, UnionMember("flow-content")],
    Discriminator(_content_kind),
]
"""Prompt text, or for a flow tag the workflow definition. Discriminated so that an error
names the one shape that was meant instead of listing why every shape failed."""


_NO_META = TagMeta()
_NO_CONFIG = TagConfig()
# The shared empty defaults come from factories: pydantic deep-copies a default instance
# for every tag that omits it, which is wasted work on frozen models.


class TagPayload(Strict):
    meta: TagMeta = Field(default_factory=lambda: _NO_META)
    config: TagConfig = Field(default_factory=lambda: _NO_CONFIG)
    content: Content = ""


_NO_PAYLOAD = TagPayload()


class Tag(Strict):
    tag: Name
    kind: Annotated[TagKind, Field(strict=False)]
    payload: TagPayload = Field(default_factory=lambda: _NO_PAYLOAD)

    @model_validator(mode="before")
    @classmethod
    def _content_fits_kind(cls, data: Any) -> Any:
        # Checked before the fields so that a mismatch is one clear error, not a list of
        # why the content is not the other shape.
        if not isinstance(data, dict) or data.get("kind") not in set(TagKind):
            return data
        payload = data.get("payload")
        content = payload.get("content", "") if isinstance(payload, dict) else ""
        if data["kind"] == TagKind.FLOW and not isinstance(content, dict):
            raise ValueError("a flow tag's content must be a mapping with 'steps'")
        if data["kind"] != TagKind.FLOW and not isinstance(content, str):
            raise ValueError(f"a {data['kind']} tag's content must be text")
        return data

    @property
    def title(self) -> str:
        return self.payload.meta.title or self.tag


class OrgUser(Strict):
    roles: Names = ()
    name: str = ""


class OrgFile(Strict):
    """One `orgs/<org>.yaml` file: an org's users and tags.

    A file whose name starts with `_` holds shared tags instead: no users, and every tag
    names the orgs it serves in `org_scope`.
    """

    org: Name | None = None
    users: dict[Name, OrgUser] = Field(default_factory=dict)
    tags: Annotated[tuple[Tag, ...], Field(strict=False)] = ()
