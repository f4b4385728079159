"""A flow tag's content, compiled and checked when the tags load: every template parsed,
every reference resolved to an input field or a step, the steps' order derived from what
each reads (and its `after`), a cycle refused. What the loader reports names the tag, the
step and the line; nothing of a flow that does not compile is ever run.

The format (the README's "Flows" has an example of each part):

    content:
      description: ...
      inputs: {type: object, properties: {...}, required: [...]}   # JSON Schema
      steps:
        - id: order                      # unique in the flow
          tool: shop__get_order          # as the caller's tools list names it
          args: {order_id: "{{ input.order_id }}"}
          when: "input.amount > 0"       # else the step is skipped
          expect: "result.structured.status == 'paid'"   # else the step failed
          after: [other_step]            # besides the steps its templates read
          on_error: abort | skip | retry | replan
          retry: {attempts: 3, backoff: 0.5, max_backoff: 30}
          retry_unsafe: false            # retry a tool that may act twice
          timeout: 10                    # seconds
      output: "{{ steps.order.text }}"   # or a mapping or list of templates
"""

from __future__ import annotations

import graphlib
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .. import jsoncodec
from ..upstreams import schemas
from ..upstreams.config import RESERVED_PREFIX
from .model import FlowDefinition, FlowStep
from .templates import (
    STEP_FIELDS,
    Expression,
    Piece,
    Reference,
    TemplateProblem,
    Unrenderable,
    expression,
    template,
)

Loc = tuple[str | int, ...]
FLOW_TOOLS: Final = "flow__"
"""Flow tools among the gateway's own tools (gateway/flows/tools.py)."""


def flow_tool(tag: str) -> str:
    """A flow tag's tool, as the gateway's own upstream names it: `flow__` and the tag's
    name without a leading `flow_` (flow_refund: flow__refund)."""
    short = tag[len("flow_") :] if tag.startswith("flow_") and len(tag) > len("flow_") else tag
    return f"{FLOW_TOOLS}{short}"


FLOW_TOOLS_LISTED: Final = f"{RESERVED_PREFIX}{FLOW_TOOLS}"


def public_flow_tool(tag: str) -> str:
    """A flow tag's tool as callers see it (gateway__flow__refund)."""
    return f"{RESERVED_PREFIX}{flow_tool(tag)}"


ARGUMENT_NAMES: Final = ("input", "steps")
EXPECT_NAMES: Final = ("input", "steps", "result")


@dataclass(frozen=True, slots=True)
class FlowProblem:
    """One mistake in a flow: where in its content (`loc`), which step, and what."""

    loc: Loc
    message: str
    step: str | None = None


class FlowFormatError(ValueError):
    def __init__(self, problems: list[FlowProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(p.message for p in self.problems))


@dataclass(frozen=True, slots=True)
class CompiledStep:
    spec: FlowStep
    index: int
    args: Any
    """The arguments with every template compiled (a Piece where the string was one)."""
    when: Expression | None
    expect: Expression | None
    needs: tuple[str, ...]
    """The steps this one waits for: its `after` and those its templates read."""

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def tool(self) -> str:
        return self.spec.tool


@dataclass(frozen=True, slots=True)
class CompiledFlow:
    name: str
    """The flow tag's name."""
    definition: FlowDefinition
    steps: tuple[CompiledStep, ...]
    output: Any
    digest: str
    """sha256 of the definition: a resumed run goes on only with the flow it started."""
    by_id: Mapping[str, CompiledStep] = field(default_factory=dict)

    @property
    def inputs(self) -> dict[str, Any]:
        """The input's JSON Schema (an object with no properties when none is declared)."""
        declared = self.definition.inputs
        return dict(declared) if declared is not None else {"type": "object", "properties": {}}

    def with_defaults(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """`arguments` with the defaults the input schema declares for fields left out."""
        properties = self.inputs.get("properties") or {}
        filled = dict(arguments)
        for name, schema in properties.items():
            if name not in filled and isinstance(schema, dict) and "default" in schema:
                filled[name] = schema["default"]
        return filled

    def unsafe_retries(self, repeatable: Callable[[str], bool]) -> list[str]:
        """Why each step with `on_error: retry` may not be retried: its tool is neither
        read-only nor idempotent (`repeatable` says, from the catalog) and the author did
        not write `retry_unsafe: true`."""
        return [
            f"step {step.id!r}: on_error is retry, but {step.tool} is neither read-only nor "
            "idempotent, so a retry may act twice; write retry_unsafe: true to retry it anyway"
            for step in self.steps
            if step.spec.on_error == "retry"
            and not step.spec.retry_unsafe
            and not repeatable(step.tool)
        ]

    def input_problem(self, arguments: Mapping[str, Any]) -> str | None:
        """What is wrong with `arguments` as this flow's input, or None when they fit."""
        text = schemas.schema_text(self.inputs)
        assert text is not None, "checked when it loaded"
        return schemas.argument_problem(text, arguments)


def compile_flow(name: str, definition: FlowDefinition) -> CompiledFlow:
    """`definition` compiled, or FlowFormatError listing every problem found."""
    problems: list[FlowProblem] = []
    fields = _input_fields(definition, problems)
    ids = {step.id: index for index, step in enumerate(definition.steps)}
    steps: list[CompiledStep] = []
    for index, step in enumerate(definition.steps):
        compiled = _step(index, step, ids, fields, problems)
        if compiled is not None:
            steps.append(compiled)
    output = _tree(definition.output, ("output",), ARGUMENT_NAMES, ids, fields, None, problems)
    if not problems:
        _order(steps, problems)
    if problems:
        raise FlowFormatError(problems)
    digest = hashlib.sha256(
        jsoncodec.dumps(definition.model_dump(mode="json"), sort_keys=True)
    ).hexdigest()
    return CompiledFlow(
        name, definition, tuple(steps), output, digest, {step.id: step for step in steps}
    )


def _input_fields(definition: FlowDefinition, problems: list[FlowProblem]) -> frozenset[str]:
    schema = definition.inputs
    if schema is None:
        return frozenset()
    wrong = schemas.problem(schema)
    if wrong is None and schema.get("type") != "object":
        wrong = "a flow's input is an object: inputs needs type: object"
    if wrong is not None:
        problems.append(FlowProblem(("inputs",), f"inputs is no usable JSON Schema: {wrong}"))
        return frozenset()
    properties = schema.get("properties")
    return frozenset(properties) if isinstance(properties, dict) else frozenset()


def _step(
    index: int,
    step: FlowStep,
    ids: Mapping[str, int],
    fields: frozenset[str],
    problems: list[FlowProblem],
) -> CompiledStep | None:
    before = len(problems)
    at: Loc = ("steps", index)
    reads: set[str] = set()

    def condition(name: str, source: str | None, names: tuple[str, ...]) -> Expression | None:
        if source is None:
            return None
        try:
            compiled = expression(source, names)
        except TemplateProblem as exc:
            problems.append(FlowProblem((*at, name), f"{name}: {exc}", step.id))
            return None
        for reference in compiled.references:
            _check(reference, (*at, name), name, step.id, ids, fields, reads, problems)
        return compiled

    when = condition("when", step.when, ARGUMENT_NAMES)
    expect = condition("expect", step.expect, EXPECT_NAMES)
    args = _tree(step.args, (*at, "args"), ARGUMENT_NAMES, ids, fields, step.id, problems, reads)
    for position, after in enumerate(step.after):
        if after not in ids:
            problems.append(
                FlowProblem(
                    (*at, "after", position),
                    f"after: no step {after!r} in this flow{_known(ids)}",
                    step.id,
                )
            )
        elif after == step.id:
            problems.append(
                FlowProblem((*at, "after"), "after: a step cannot wait for itself", step.id)
            )
        reads.add(after)
    if len(problems) > before:
        return None
    needs = tuple(sorted(reads, key=ids.__getitem__))
    return CompiledStep(step, index, args, when, expect, needs)


def _tree(
    value: Any,
    at: Loc,
    names: tuple[str, ...],
    ids: Mapping[str, int],
    fields: frozenset[str],
    step: str | None,
    problems: list[FlowProblem],
    reads: set[str] | None = None,
) -> Any:
    """`value` with every template string compiled, and its references checked."""
    if isinstance(value, str):
        where = ".".join(str(part) for part in (at[2:] if step is not None else at))
        try:
            piece = template(value, names)
        except TemplateProblem as exc:
            problems.append(FlowProblem(at, f"{where}: {exc}", step))
            return value
        if piece is None:
            return value
        for reference in piece.references:
            _check(reference, at, where, step, ids, fields, reads, problems)
        return piece
    if isinstance(value, dict):
        return {
            key: _tree(inner, (*at, key), names, ids, fields, step, problems, reads)
            for key, inner in value.items()
        }
    if isinstance(value, list):
        return [
            _tree(inner, (*at, index), names, ids, fields, step, problems, reads)
            for index, inner in enumerate(value)
        ]
    return value


def _check(
    reference: Reference,
    at: Loc,
    where: str,
    step: str | None,
    ids: Mapping[str, int],
    fields: frozenset[str],
    reads: set[str] | None,
    problems: list[FlowProblem],
) -> None:
    """One reference, resolved: an input field declared, a step of the flow (not the one
    reading it), a field a step's result has."""

    def problem(message: str) -> None:
        problems.append(FlowProblem(at, f"{where}: {message}", step))

    if reference.root == "input":
        if reference.key is not None and reference.key not in fields:
            declared = f" (it declares {', '.join(sorted(fields))})" if fields else ""
            problem(
                f"input.{reference.key}: the flow's inputs declare no {reference.key!r}{declared}"
            )
        return
    if reference.root == "result":
        if reference.key is not None and reference.key not in STEP_FIELDS:
            problem(f"result.{reference.key}: a result has {', '.join(STEP_FIELDS)}")
        return
    assert reference.root == "steps"
    assert reference.key is not None
    if reference.key not in ids:
        problem(f"steps.{reference.key}: no step {reference.key!r} in this flow{_known(ids)}")
        return
    if reference.key == step:
        problem(
            f"steps.{reference.key}: a step cannot read its own result (expect reads it as result)"
        )
        return
    if reference.field is not None and reference.field not in STEP_FIELDS:
        problem(
            f"steps.{reference.key}.{reference.field}: a step's result has {', '.join(STEP_FIELDS)}"
        )
        return
    if reads is not None:
        reads.add(reference.key)


def _known(ids: Mapping[str, int]) -> str:
    shown = sorted(ids)
    return f" (its steps: {', '.join(shown[:20])}{', ...' if len(shown) > 20 else ''})"


def _order(steps: list[CompiledStep], problems: list[FlowProblem]) -> None:
    """A cycle among the steps' needs is a problem, named by the steps on it."""
    graph = {step.id: step.needs for step in steps}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        cycle: list[str] = exc.args[1]
        by_id = {step.id: step for step in steps}
        first = by_id[cycle[0]]
        problems.append(
            FlowProblem(
                ("steps", first.index),
                "the steps wait for each other in a cycle: " + " -> ".join(cycle),
                first.id,
            )
        )


def render(value: Any, names: Mapping[str, Any]) -> Any:
    """A compiled tree (arguments, output) rendered over `names`; Unrenderable naming the
    template that failed."""
    if isinstance(value, Piece):
        return value.evaluate(names)
    if isinstance(value, dict):
        return {key: render(inner, names) for key, inner in value.items()}
    if isinstance(value, list):
        return [render(inner, names) for inner in value]
    return value


__all__ = [
    "CompiledFlow",
    "CompiledStep",
    "FlowFormatError",
    "FlowProblem",
    "Unrenderable",
    "compile_flow",
    "render",
]
