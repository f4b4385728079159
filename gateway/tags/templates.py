"""The expressions and templates of a flow, in Jinja2's sandboxed environment.

A flow's author writes three kinds:

- an argument or the flow's `output`: a string holding `{{ expression }}`s is rendered to
  text, except one that is a single `{{ expression }}` and nothing else, whose value is
  taken as it is (a number stays a number, a list a list);
- a step's `when` and `expect`: one expression (no braces) that must come out true or false.

They read `input` (the flow's input), `steps.<id>` (an earlier step's result, see
`step_view`) and, in `expect`, `result` (the step's own). Everything is checked when the
tags load: the syntax, the filters named, and every reference (an unknown step or input
field is an error there, not at run time). `{% statements %}` are not allowed: a template
computes a value, it does not loop. The sandbox keeps templates from Python's internals
(no attributes starting `_`, no methods that change data), and what it builds is held to
sizes a workflow needs, since a template of a mistaken flow must not take the gateway's
memory: `*` and `join` build at most MAX_BUILT items or characters, `**` takes exponents
up to 64 and results up to 4,096 bits, `'%'` formatting and the methods and filters that
pad, format to a width or grow a text by each replacement (UNBOUNDED, the `center`,
`format` and `replace` filters) are not there, and a value or text past MAX_VALUE is
refused.
Values from callers and upstreams are data to templates, never template text: nothing a
caller sends is ever evaluated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import jsonpointer
from jinja2 import StrictUndefined, TemplateError, Undefined, nodes, pass_eval_context
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .. import jsoncodec

MAX_SOURCE: Final = 4_000
"""Characters of one expression or template."""
MAX_BUILT: Final = 100_000
"""Items or characters `*` may build (counting what a list it repeats holds), and the
characters of what `join` may join."""
MAX_VALUE: Final = 4_000_000
"""Characters (and items) of a template's whole value or rendered text: what a step passes
on from another's result may be large, but not without end."""
STEP_FIELDS: Final = ("status", "structured", "text", "content", "is_error", "error")
"""What `steps.<id>` holds (step_view)."""

_WHOLE = re.compile(r"\A\{\{(?P<expression>.*)\}\}\Z", re.DOTALL)


class TemplateProblem(ValueError):
    """A template or expression that cannot be used as written: what is wrong, in words."""


class Unrenderable(ValueError):
    """A template that failed on the data of a run: what went wrong, in words."""


UNBOUNDED: Final = frozenset(
    {
        "center",
        "ljust",
        "rjust",
        "zfill",
        "expandtabs",
        "format",
        "format_map",
        "indent",
        "replace",
        "join",
    }
)
"""String methods that pad or format to a width a template gives, or grow a text by each
replacement or separator: what they build has no bound but the numbers, so flow templates
have none of them (the `join` filter is there, bounded)."""


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%"})

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr in UNBOUNDED:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def getattr(self, obj: Any, attribute: str) -> Any:
        # The data are JSON: `steps.order.structured.items` is a field, never dict.items.
        if isinstance(obj, dict):
            if attribute in obj:
                return obj[attribute]
            return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "%":
            if isinstance(left, str):  # printf-style formatting pads to any width asked
                raise SecurityError("'%' formatting is not available in a flow template")
            return left % right
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > 64:
                raise SecurityError("an exponent past 64 is not computed in a flow template")
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() * right > 4096
            ):
                raise SecurityError("a power past 4,096 bits is not computed in a flow template")
            return left**right
        for count, built in ((right, left), (left, right)):
            if isinstance(count, int) and isinstance(built, str | list | tuple):
                size = count * _size(built)
                if size > MAX_BUILT:
                    raise SecurityError(f"'*' would build {size} items, more than {MAX_BUILT}")
        return left * right


def _size(value: Any) -> int:
    """Characters and items in `value`, as far as MAX_BUILT (past that, no more counted)."""
    total, stack = 0, [value]
    while stack and total <= MAX_BUILT:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, list | tuple):
            total += len(item)
            stack.extend(item)
        elif isinstance(item, Mapping):
            total += len(item)
            stack.extend(item.values())
    return total


def _join(context: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    """The `join` filter, refusing to build past MAX_BUILT."""
    items = list(value)[: MAX_BUILT + 1]
    size = len(d) * max(0, len(items) - 1) + sum(_size(str(item)) for item in items)
    if size > MAX_BUILT:
        raise SecurityError(f"join would build {size} characters, more than {MAX_BUILT}")
    joined: str = _JOIN(context, items, d, attribute)
    return joined


ENVIRONMENT: Final = _Environment(undefined=StrictUndefined, autoescape=False)
for _name in ("center", "indent", "format", "wordwrap", "truncate", "replace", "filesizeformat"):
    # Sizes from the template's numbers (replace: a text grown by each replacement).
    ENVIRONMENT.filters.pop(_name, None)
_JOIN = ENVIRONMENT.filters["join"]
ENVIRONMENT.filters["join"] = pass_eval_context(_join)


@dataclass(frozen=True, slots=True)
class Reference:
    """A name a template reads: `input.<field>`, `steps.<id>.<field>`, or `result`."""

    root: str
    key: str | None = None
    field: str | None = None


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled `when`, `expect`, or `{{ expression }}`: `evaluate` gives its value."""

    source: str
    references: tuple[Reference, ...]
    _compiled: Any

    def evaluate(self, names: Mapping[str, Any]) -> Any:
        try:
            value = self._compiled(**names)
        except RecursionError:
            raise Unrenderable(f"{_quote(self.source)}: nested too deep") from None
        except (Exception, MemoryError) as exc:  # data of a run is what fails: the step's
            raise Unrenderable(f"{_quote(self.source)}: {_said(exc)}") from None
        if isinstance(value, Undefined):
            raise Unrenderable(f"{_quote(self.source)}: {_said_undefined(value)}")
        return _json(value, self.source)

    def truth(self, names: Mapping[str, Any]) -> bool:
        """The value of a condition, which must be true or false."""
        value = self.evaluate(names)
        if not isinstance(value, bool):
            shown = jsoncodec.dumps(value).decode()[:80]
            raise Unrenderable(f"{_quote(self.source)} gave {shown}, not true or false")
        return value


@dataclass(frozen=True, slots=True)
class Text:
    """A compiled string with `{{ expressions }}` among text: `render` gives the text."""

    source: str
    references: tuple[Reference, ...]
    _compiled: Any

    def evaluate(self, names: Mapping[str, Any]) -> str:
        try:
            text: str = self._compiled.render(**names)
        except RecursionError:
            raise Unrenderable(f"{_quote(self.source)}: nested too deep") from None
        except (Exception, MemoryError) as exc:  # data of a run is what fails: the step's
            raise Unrenderable(f"{_quote(self.source)}: {_said(exc)}") from None
        if len(text) > MAX_VALUE:
            raise Unrenderable(
                f"{_quote(self.source)} rendered {len(text)} characters, over {MAX_VALUE}"
            )
        return text


@dataclass(frozen=True, slots=True)
class Pointer:
    """A generated plan's `{"$step": id, "path": pointer}`: the value at a JSON pointer in
    an earlier step's result (`/structuredContent/id`). Never a template: what a model
    writes is data, not code."""

    step: str
    path: str

    def evaluate(self, names: Mapping[str, Any]) -> Any:
        view = names["steps"].get(self.step)
        if view is None:
            raise Unrenderable(f"step {self.step!r} has no result to take")
        result = {"content": view["content"], "isError": view["is_error"]}
        if view["structured"] is not None:
            result["structuredContent"] = view["structured"]
        try:
            return jsonpointer.resolve_pointer(result, self.path)
        except jsonpointer.JsonPointerException as exc:
            raise Unrenderable(
                f"nothing at {self.path!r} in the output of step {self.step!r}: {exc}"
            ) from None


Piece = Expression | Text | Pointer


def expression(source: str, names: Iterable[str]) -> Expression:
    """A condition or value as written (no braces); TemplateProblem when it cannot be one.
    `names`: the roots it may read."""
    _bounded(source)
    try:
        compiled = ENVIRONMENT.compile_expression(source, undefined_to_none=False)
        tree = ENVIRONMENT.parse(f"{{{{ {source} }}}}")
        return Expression(source, _references(tree, set(names)), compiled)
    except TemplateError as exc:
        raise TemplateProblem(f"{_quote(source)} is not an expression: {_said(exc)}") from None
    except RecursionError:
        raise TemplateProblem(f"{_quote(source)} is nested too deep") from None


def template(source: str, names: Iterable[str]) -> Expression | Text | None:
    """A string value of arguments or output: an Expression when it is one `{{ ... }}` and
    nothing else, a Text when it holds some among text, None when it holds none (then it is
    a plain string). TemplateProblem when it is not a template that can be used."""
    if "{{" not in source and "{%" not in source and "{#" not in source:
        return None
    _bounded(source)
    allowed = set(names)
    try:
        tree = ENVIRONMENT.parse(source)
    except TemplateError as exc:
        raise TemplateProblem(f"{_quote(source)} is not a template: {_said(exc)}") from None
    except RecursionError:
        raise TemplateProblem(f"{_quote(source)} is nested too deep") from None
    statements = [n for n in tree.body if not isinstance(n, nodes.Output)]
    if statements:
        kind = type(statements[0]).__name__.lower()
        raise TemplateProblem(
            f"{_quote(source)} holds a {{% {kind} %}} statement: a flow template holds "
            "{{ expressions }} among text, no statements (use `a if c else b` for a choice)"
        )
    whole = _WHOLE.match(source)
    outputs = tree.body[0].nodes if len(tree.body) == 1 else []  # type: ignore[attr-defined]
    if whole is not None and len(outputs) == 1 and not isinstance(outputs[0], nodes.TemplateData):
        return expression(whole["expression"].strip(), allowed)
    try:
        compiled = ENVIRONMENT.from_string(source)
        return Text(source, _references(tree, allowed), compiled)
    except TemplateError as exc:
        raise TemplateProblem(f"{_quote(source)} is not a template: {_said(exc)}") from None
    except RecursionError:
        raise TemplateProblem(f"{_quote(source)} is nested too deep") from None


def _bounded(source: str) -> None:
    if len(source) > MAX_SOURCE:
        raise TemplateProblem(f"a template of {len(source)} characters, over {MAX_SOURCE}")


def _references(tree: nodes.Node, allowed: set[str]) -> tuple[Reference, ...]:
    """Every name `tree` reads, as References; TemplateProblem for a root that is not
    `allowed`, or `steps` not followed by a step id."""
    found: list[Reference] = []
    stack: list[nodes.Node] = [tree]
    while stack:
        node = stack.pop()
        reference = _reference(node)
        if reference is not None:
            if reference.root not in allowed:
                known = ", ".join(sorted(allowed))
                raise TemplateProblem(
                    f"unknown name {reference.root!r}: a template here may read {known}"
                )
            found.append(reference)
            continue
        if isinstance(node, nodes.Name) and node.ctx == "load":
            known = ", ".join(sorted(allowed))
            raise TemplateProblem(f"unknown name {node.name!r}: a template here may read {known}")
        stack.extend(node.iter_child_nodes())
    return tuple(found)


def _key(node: nodes.Node) -> tuple[nodes.Node, str] | None:
    """(inner, key) when `node` is `inner.key` or `inner['key']`."""
    if isinstance(node, nodes.Getattr):
        return node.node, node.attr
    if (
        isinstance(node, nodes.Getitem)
        and isinstance(node.arg, nodes.Const)
        and isinstance(node.arg.value, str)
    ):
        return node.node, node.arg.value
    return None


def _chain(node: nodes.Node) -> tuple[str, list[str]] | None:
    """`root.a.b` as ("root", ["a", "b"]), or None when `node` is no such chain."""
    keys: list[str] = []
    while True:
        if isinstance(node, nodes.Name) and node.ctx == "load":
            return node.name, keys[::-1]
        step = _key(node)
        if step is None:
            return None
        node, key = step
        keys.append(key)


def _reference(node: nodes.Node) -> Reference | None:
    """The reference `node` is the outermost of (`steps.a.text`, `input.x`, `result`)."""
    chain = _chain(node)
    if chain is None:
        return None
    root, keys = chain
    if root == "steps":
        if not keys:
            raise TemplateProblem("`steps` is read as steps.<id> (a step's result), not as a whole")
        return Reference(root, keys[0], keys[1] if len(keys) > 1 else None)
    return Reference(root, keys[0] if keys else None, keys[1] if len(keys) > 1 else None)


def _json(value: Any, source: str, budget: list[int] | None = None) -> Any:
    """A template's value as JSON: sequences as lists; anything else no JSON is refused,
    and so is a value of more than MAX_VALUE characters and items in all (`budget`)."""
    if budget is None:
        budget = [MAX_VALUE]
    budget[0] -= 1 + (len(value) if isinstance(value, str) else 0)
    if budget[0] < 0:
        raise Unrenderable(f"{_quote(source)} gave a value of more than {MAX_VALUE} characters")
    if isinstance(value, str | bool | int) or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Unrenderable(f"{_quote(source)} gave {value}, which is no JSON number")
        return value
    if isinstance(value, Mapping):
        return {str(key): _json(inner, source, budget) for key, inner in value.items()}
    if isinstance(value, list | tuple | range) or hasattr(value, "__next__"):
        return [_json(inner, source, budget) for inner in value]
    raise Unrenderable(f"{_quote(source)} gave a {type(value).__name__}, which is no JSON value")


def _quote(source: str) -> str:
    """A template as an error shows it: in full when short, else its start."""
    return repr(source) if len(source) <= 120 else f"{source[:100]!r}... ({len(source)} characters)"


def _said(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return str(text)[:300]


def _said_undefined(value: Undefined) -> str:
    try:
        str(value)
    except TemplateError as exc:
        return _said(exc)
    return "undefined"  # pragma: no cover - StrictUndefined always raises
