"""What a planner answers, each turn: exactly one envelope. The model never acts; the
engine reads its envelope, checks it, and does what it says or refuses.

Six kinds, told apart by `kind`, each with the model's `confidence` (0 to 1) and a short
`reasoning`:

- `tool`: one call;
- `tools`: several, `sequential` or `parallel`, all run with no model turn in between and
  their results returned together;
- `plan`: a goal and the steps to reach it, committed to before they run: a flow tag to
  follow (`flow`), or the steps themselves, each a tool with arguments, where an argument
  may take an earlier step's output (`{"$step": "<id>", "path": "<JSON pointer>"}`);
- `reply`: the answer, which ends the session's turn;
- `clarify`: a question for the caller; the session waits for the answer;
- `error`: the model gives up, saying why.

A call's arguments travel as the text of one JSON object: the model-facing schema is the
strict subset the Messages API enforces (`additionalProperties: false` everywhere), where
a free-form object could only be empty, and each tool's own inputSchema is checked by the
call service anyway. In-process planners (scripted, tests) may give the object itself.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, Self

import jsonpointer
from pydantic import (
    BeforeValidator,
    Field,
    JsonValue,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from .. import jsoncodec
from ..strict import Strict
from ..tags.model import NAME_PATTERN

MAX_CALLS: Final = 32
"""Calls in one `tools` envelope or steps in one plan: more is a runaway, not a task."""
MAX_TEXT: Final = 20_000
"""Characters of a reply, a question or a reason."""

STEP_REF: Final = "$step"
"""The key of an argument value that takes an earlier step's output."""


def _object_from_text(value: object) -> object:
    """A call's arguments: the text of a JSON object (the model's form), or the object."""
    if isinstance(value, str):
        try:
            value = jsoncodec.loads(value)
        except ValueError as exc:
            raise ValueError(f"the arguments are not JSON text: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError("the arguments must be a JSON object ({...}), not a list or a value")
    return value


Arguments = Annotated[
    dict[str, JsonValue],
    BeforeValidator(_object_from_text),
    WithJsonSchema(
        {
            "type": "string",
            "description": (
                "The tool's arguments: the text of one JSON object that fits the tool's "
                'input schema, e.g. {"order_id": "A-17", "limit": 5}; {} for none'
            ),
        }
    ),
]
Confidence = Annotated[
    float,
    Field(
        ge=0,
        le=1,
        strict=False,
        description="How sure you are that this is the right next step, from 0 to 1",
    ),
]
Reasoning = Annotated[
    str,
    Field(max_length=2_000, description="Why this is the next step, in a sentence or two"),
]
ToolName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256),
    Field(description="A tool's name, exactly as listed"),
]
Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT)]
StepId = Annotated[
    str,
    StringConstraints(pattern=NAME_PATTERN),
    Field(description="A short name for the step (letters, digits, - and _)"),
]


class Call(Strict):
    tool: ToolName
    arguments: Arguments


class _Envelope(Strict):
    confidence: Confidence
    reasoning: Reasoning


class ToolEnvelope(_Envelope):
    """Call one tool, then decide again with its result."""

    kind: Literal["tool"]
    call: Call


class ToolsEnvelope(_Envelope):
    """Call several tools with no turn in between; all their results come back together."""

    kind: Literal["tools"]
    calls: Annotated[tuple[Call, ...], Field(min_length=1, max_length=MAX_CALLS, strict=False)]
    mode: Literal["sequential", "parallel"] = Field(
        description="sequential: one after another, in order; parallel: at once"
    )


class Step(Strict):
    id: StepId
    tool: ToolName
    after: Annotated[tuple[StepId, ...], Field(strict=False, max_length=MAX_CALLS)] | None = Field(
        default=None,
        description=(
            "The earlier steps this one waits for (besides those whose output it takes); "
            "[] for none, so that it may run at once with others. Left out: the step "
            "before it"
        ),
    )
    arguments: Annotated[
        Arguments,
        Field(
            description=(
                "As a call's arguments; a value may take an earlier step's output instead: "
                '{"$step": "<step id>", "path": "<JSON pointer into its result, e.g. '
                '/structuredContent/id>"}'
            )
        ),
    ]


class PlanEnvelope(_Envelope):
    """Commit to the steps before any of them runs: a flow tag to follow, or the steps."""

    kind: Literal["plan"]
    goal: Text
    flow: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = Field(
        default=None, description="The name of a flow to follow; then no steps"
    )
    inputs: Arguments | None = Field(
        default=None, description="The flow's input, when it names a flow; else leave out"
    )
    steps: Annotated[tuple[Step, ...], Field(max_length=MAX_CALLS, strict=False)] = ()

    @model_validator(mode="after")
    def _flow_or_steps(self) -> Self:
        if self.flow is not None and self.steps:
            raise ValueError("a plan names a flow to follow or lists its steps, not both")
        if self.flow is None and not self.steps:
            raise ValueError("a plan names a flow to follow or lists at least one step")
        seen: set[str] = set()
        for step in self.steps:
            for reference in (*_references(step.arguments), *(step.after or ())):
                if reference not in seen:
                    raise ValueError(
                        f"step {step.id!r} takes the output of {reference!r}, which is not an "
                        "earlier step"
                    )
            if step.id in seen:
                raise ValueError(f"step id {step.id!r} is used twice")
            seen.add(step.id)
        return self


class ReplyEnvelope(_Envelope):
    """The answer to the caller."""

    kind: Literal["reply"]
    text: Text


class ClarifyEnvelope(_Envelope):
    """A question for the caller, who answers before the session goes on."""

    kind: Literal["clarify"]
    question: Text


class ErrorEnvelope(_Envelope):
    """The task cannot be done with the tools at hand: say why."""

    kind: Literal["error"]
    reason: Text


Envelope = Annotated[
    ToolEnvelope | ToolsEnvelope | PlanEnvelope | ReplyEnvelope | ClarifyEnvelope | ErrorEnvelope,
    Field(discriminator="kind"),
]
ENVELOPE: Final[TypeAdapter[Envelope]] = TypeAdapter(Envelope)

ACTING: Final = (ToolEnvelope, ToolsEnvelope, PlanEnvelope)
"""The kinds that call tools (held to the confidence threshold)."""


def envelope_schema() -> dict[str, Any]:
    """The JSON Schema of an envelope, as the model is shown it (the `emit_envelope`
    tool's input schema); planners adapt it to their API's subset."""
    return ENVELOPE.json_schema()


class InvalidEnvelope(ValueError):
    """The model's answer is no envelope: what is wrong, in words for a repair turn."""


def parse(data: object) -> Envelope:
    """The envelope in `data` (a tool use's input, or an in-process planner's dict), or
    InvalidEnvelope naming what does not fit, field by field (at most five)."""
    try:
        return ENVELOPE.validate_python(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False)[:5]:
            where = ".".join(str(part) for part in error["loc"]) or "the envelope"
            problems.append(f"{where}: {error['msg']}")
        more = exc.error_count() - len(problems)
        tail = f" (and {more} more)" if more > 0 else ""
        raise InvalidEnvelope("; ".join(problems) + tail) from None


def has_references(arguments: dict[str, JsonValue]) -> bool:
    """Whether `arguments` take any earlier step's output."""
    return bool(_references(arguments))


def _references(value: JsonValue) -> list[str]:
    """The step ids that `value` (a step's arguments) takes outputs of."""
    found: list[str] = []
    stack: list[JsonValue] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            step = item.get(STEP_REF)
            if isinstance(step, str) and set(item) <= {STEP_REF, "path"}:
                found.append(step)
                continue
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


class StepReferenceError(ValueError):
    """A step's argument takes an output that is not there."""


def substitute(arguments: dict[str, JsonValue], outputs: Mapping[str, Any]) -> dict[str, Any]:
    """`arguments` with each `{"$step": id, "path": pointer}` replaced by what the JSON
    pointer finds in step `id`'s output (its result as JSON: `/structuredContent/id`,
    `/content/0/text`). StepReferenceError when the step has no output or the pointer
    finds nothing."""

    def walk(value: JsonValue) -> Any:
        if isinstance(value, dict):
            step = value.get(STEP_REF)
            if isinstance(step, str) and set(value) <= {STEP_REF, "path"}:
                if step not in outputs:
                    raise StepReferenceError(f"step {step!r} has no output to take")
                path = value.get("path", "")
                if not isinstance(path, str):
                    raise StepReferenceError(f"the path into step {step!r} is not text")
                try:
                    return jsonpointer.resolve_pointer(outputs[step], path)
                except jsonpointer.JsonPointerException as exc:
                    raise StepReferenceError(
                        f"nothing at {path!r} in the output of step {step!r}: {exc}"
                    ) from None
            return {key: walk(inner) for key, inner in value.items()}
        if isinstance(value, list):
            return [walk(inner) for inner in value]
        return value

    try:
        return {key: walk(value) for key, value in arguments.items()}
    except RecursionError:
        raise StepReferenceError("the arguments are nested too deep") from None


def edited(data: Any, edits: Mapping[int, dict[str, Any]] | Mapping[str, Any]) -> Any:
    """The envelope `data` with the arguments of the calls in `edits` (by index, or its
    text as a snapshot keeps it) replaced."""
    if not edits:
        return data
    data = copy.deepcopy(data)
    kind = data["kind"]
    calls = (
        [data["call"]] if kind == "tool" else data["calls"] if kind == "tools" else data["steps"]
    )
    for key, arguments in edits.items():
        index = int(key)
        if index < 0:
            raise IndexError(f"no call {index}")
        calls[index]["arguments"] = dict(arguments)
    return data
