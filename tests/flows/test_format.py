"""The flow format as the loader reads it: every mistake a ConfigIssue naming the file and
line, the tag, the step and what is wrong; a valid flow compiled, its steps' needs
derived; templates rendered with their types, over JSON data only, in a sandbox that
keeps them from Python's internals and from building without bound."""

from __future__ import annotations

import re
import textwrap
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.flows.records import step_view
from gateway.principal import Principal
from gateway.tags.flows import CompiledFlow, render
from gateway.tags.loader import tagset_from_texts
from gateway.tags.resolve import resolve
from gateway.tags.templates import MAX_BUILT, Unrenderable

HEAD = """\
users:
  alice: {roles: []}
tags:
  - tag: f
    kind: flow
    payload:
      config: {assigned_users: [alice]}
      content:
"""


def org(content: str) -> str:
    """acme.yaml with one flow tag `f` (alice's), whose content is `content`."""
    return HEAD + textwrap.indent(textwrap.dedent(content).lstrip("\n"), " " * 8)


def issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        tagset_from_texts({"acme.yaml": text})
    return [str(issue) for issue in caught.value.issues]


def line(text: str, needle: str) -> int:
    """The (1-based) line of `text` that holds `needle`, which only one line does."""
    found = [number for number, held in enumerate(text.splitlines(), 1) if needle in held]
    assert len(found) == 1, (needle, found)
    return found[0]


def compiled(content: str) -> CompiledFlow:
    flow = tagset_from_texts({"acme.yaml": org(content)}).orgs["acme"].tags["f"].flow
    assert flow is not None
    return flow


TWO = """
steps:
  - id: a
    tool: x__a
"""
"""A first step for the flows below: a mistake in the second is then the only issue."""

MISTAKES = [
    pytest.param(
        TWO + '  - id: b\n    tool: x__b\n    args: {v: "{{ steps.nope.text }}"}\n',
        "steps.nope",
        "payload.content.steps[1]: step 'b': args.v: steps.nope: no step 'nope' in this flow "
        "(its steps: a, b)",
        id="unknown-step-in-args",
    ),
    pytest.param(
        """
        inputs: {type: object, properties: {n: {type: integer}}}
        steps:
          - id: a
            tool: x__a
            args: {v: "{{ input.m + 1 }}"}
        """,
        "input.m",
        "payload.content.steps[0]: step 'a': args.v: input.m: the flow's inputs declare no "
        "'m' (it declares n)",
        id="unknown-input-field",
    ),
    pytest.param(
        TWO + '  - id: b\n    tool: x__b\n    args: {v: "{{ os.environ }}"}\n',
        "os.environ",
        "payload.content.steps[1]: step 'b': args.v: unknown name 'os': a template here may "
        "read input, steps",
        id="unknown-name",
    ),
    pytest.param(
        TWO + '  - id: b\n    tool: x__b\n    args: {v: "{% for i in [1] %}{{ i }}{% endfor %}"}\n',
        "{% for",
        "payload.content.steps[1]: step 'b': args.v: '{% for i in [1] %}{{ i }}{% endfor %}' "
        "holds a {% for %} statement: a flow template holds {{ expressions }} among text, no "
        "statements (use `a if c else b` for a choice)",
        id="for-statement",
    ),
    pytest.param(
        TWO + '  - id: b\n    tool: x__b\n    args: {v: "total {{ steps.a.text + }}"}\n',
        "total {{",
        "payload.content.steps[1]: step 'b': args.v: 'total {{ steps.a.text + }}' is not a "
        "template: unexpected 'end of print statement'",
        id="bad-template-syntax",
    ),
    pytest.param(
        TWO + '  - id: b\n    tool: x__b\n    when: "steps.a.status =="\n',
        "when:",
        "payload.content.steps[1]: step 'b': when: 'steps.a.status ==' is not an expression: "
        "unexpected 'end of template'",
        id="when-no-expression",
    ),
    pytest.param(
        TWO + "  - id: b\n    tool: x__b\n    after: [a, ghost]\n",
        "after:",
        "payload.content.steps[1]: step 'b': after: no step 'ghost' in this flow (its steps: a, b)",
        id="after-no-step",
    ),
    pytest.param(
        """
        steps:
          - id: a
            tool: x__a
            after: [b]
          - id: b
            tool: x__b
            after: [a]
        """,
        "- id: a",
        "payload.content.steps[0]: step 'a': the steps wait for each other in a cycle: a -> b -> a",
        id="cycle-by-after",
    ),
    pytest.param(
        """
        steps:
          - id: a
            tool: x__a
            args: {v: "{{ steps.b.text }}"}
          - id: b
            tool: x__b
            when: "steps.a.status == 'completed'"
        """,
        "- id: a",
        "payload.content.steps[0]: step 'a': the steps wait for each other in a cycle: a -> b -> a",
        id="cycle-by-references",
    ),
    pytest.param(
        """
        steps:
          - id: x
            tool: x__a
          - id: y
            tool: x__b
            args: {v: "{{ steps.x.total }}"}
        """,
        "steps.x.total",
        "payload.content.steps[1]: step 'y': args.v: steps.x.total: a step's result has "
        "status, structured, text, content, is_error, error",
        id="unknown-result-field",
    ),
    pytest.param(
        TWO + "  - id: b\n    tool: x__b\n    on_error: skip\n    retry: {attempts: 2}\n",
        "- id: b",
        "payload.content.steps[1]: retry is set, but on_error is 'skip', not 'retry'",
        id="retry-without-on-error-retry",
    ),
    pytest.param(
        TWO + "  - id: b\n    tool: x__b\n    retry_unsafe: true\n",
        "- id: b",
        "payload.content.steps[1]: retry_unsafe applies only to a step with on_error: retry",
        id="retry-unsafe-without-retry",
    ),
    pytest.param(
        "inputs: {type: array, items: {type: integer}}\n" + TWO,
        "inputs:",
        "payload.content.inputs: inputs is no usable JSON Schema: a flow's input is an "
        "object: inputs needs type: object",
        id="inputs-not-object",
    ),
    pytest.param(
        TWO + "  - id: b\n    tool: x__b\n    expect: \"steps.b.status == 'completed'\"\n",
        "expect:",
        "payload.content.steps[1]: step 'b': expect: steps.b: a step cannot read its own "
        "result (expect reads it as result)",
        id="expect-reads-own-step",
    ),
    pytest.param(
        TWO + 'output: {total: "{{ steps.ghost.text }}"}\n',
        "output:",
        "payload.content.output.total: output.total: steps.ghost: no step 'ghost' in this "
        "flow (its steps: a)",
        id="unknown-step-in-output",
    ),
]


@pytest.mark.parametrize(("content", "needle", "said"), MISTAKES)
def test_a_mistake_is_one_issue_at_its_line(content: str, needle: str, said: str) -> None:
    text = org(content)
    assert issues(text) == [f"acme.yaml:{line(text, needle)}: tag 'f': {said}"]


def test_every_mistake_of_a_flow_is_reported_at_once() -> None:
    text = org(
        """
        inputs: {type: object, properties: {n: {type: integer}}}
        steps:
          - id: a
            tool: x__a
            args:
              first: "{{ input.m }}"
              second: ["ok", "{{ steps.zz.text }}"]
          - id: b
            tool: x__b
            when: "steps.a.nope"
        """
    )
    assert issues(text) == [
        f"acme.yaml:{line(text, 'first:')}: tag 'f': payload.content.steps[0]: step 'a': "
        "args.first: input.m: the flow's inputs declare no 'm' (it declares n)",
        f"acme.yaml:{line(text, 'second:')}: tag 'f': payload.content.steps[0]: step 'a': "
        "args.second.1: steps.zz: no step 'zz' in this flow (its steps: a, b)",
        f"acme.yaml:{line(text, 'when:')}: tag 'f': payload.content.steps[1]: step 'b': "
        "when: steps.a.nope: a step's result has status, structured, text, content, "
        "is_error, error",
    ]


def test_the_only_step_of_a_flow_with_a_mistake_is_one_issue() -> None:
    text = org("steps:\n  - id: a\n    tool: x__a\n    retry: {attempts: 2}\n")
    assert issues(text) == [
        f"acme.yaml:{line(text, '- id: a')}: tag 'f': payload.content.steps[0]: retry is "
        "set, but on_error is 'abort', not 'retry'"
    ]


def test_a_valid_flow_compiles_with_needs_from_references_and_after() -> None:
    content = """
        description: Look up and settle
        inputs:
          type: object
          properties: {order: {type: string}, amount: {type: integer, default: 1}}
          required: [order]
        steps:
          - id: look
            tool: shop__get_order
            args: {id: "{{ input.order }}"}
          - id: price
            tool: shop__price
            args: {id: "{{ steps.look.structured.id }}"}
          - id: note
            tool: shop__note
            after: [look]
          - id: pay
            tool: shop__pay
            when: "steps.price.structured.total > 0"
            expect: "result.structured.paid and steps.note.status == 'completed'"
            args: {amount: "{{ input.amount }}"}
            on_error: retry
            retry: {attempts: 2}
        output: "{{ steps.pay.text }}"
    """
    flow = compiled(content)
    assert flow.name == "f"
    assert {step.id: step.needs for step in flow.steps} == {
        "look": (),
        "price": ("look",),
        "note": ("look",),
        "pay": ("price", "note"),
    }
    assert len(flow.digest) == 64
    assert flow.with_defaults({"order": "A-1"}) == {"order": "A-1", "amount": 1}
    assert flow.input_problem({"order": "A-1"}) is None
    assert flow.input_problem({"amount": 2}) is not None
    alice = resolve(tagset_from_texts({"acme.yaml": org(content)}), Principal("alice", "acme"))
    assert [(info.tag, info.flow.digest) for info in alice.flows] == [("f", flow.digest)]
    # The same definition compiles to the same digest; another to another.
    assert compiled(content).digest == flow.digest
    assert compiled(content.replace("default: 1", "default: 2")).digest != flow.digest


ARGS_FLOW = """
inputs:
  type: object
  properties:
    n: {type: integer}
    flag: {type: boolean}
    obj: {type: object}
    list: {type: array}
steps:
  - id: s
    tool: x__s
    args: """


def _args(args: str) -> Any:
    """Step `s`'s arguments, `args` as YAML, compiled as the loader compiles them."""
    return compiled(ARGS_FLOW + args + "\n").steps[0].args


def _one(source: str) -> Any:
    """Arguments `{v: source}`, `source` a string."""
    return _args("{v: " + _quoted(source) + "}")


def _quoted(source: str) -> str:
    return '"' + source.replace('"', '\\"') + '"'


NAMES: dict[str, Any] = {"input": {"n": 5, "flag": True, "obj": {}}, "steps": {}}


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ('"{{ input.n }}"', 5),
        ('"{{ input.n * 2 }}"', 10),
        ('"{{ input.n / 2 }}"', 2.5),
        ('"{{ input.flag }}"', True),
        ("\"{{ [input.n, 'x'] }}\"", [5, "x"]),
        ("\"{{ {'k': input.n} }}\"", {"k": 5}),
        ('"{{ input.n if input.flag else none }}"', 5),
        ('"n={{ input.n }}"', "n=5"),
        ('"{{ input.n }} "', "5 "),
        ('"{{ input.n }}{{ input.n }}"', "55"),
        ('"{{ input.flag }} or not"', "True or not"),
        ('"no template"', "no template"),
        ("7", 7),
    ],
)
def test_render_keeps_a_single_expressions_type(source: str, value: Any) -> None:
    rendered = render(_args("{v: " + source + "}"), NAMES)["v"]
    assert rendered == value
    assert type(rendered) is type(value)


def test_render_walks_nested_arguments() -> None:
    args = _args('{outer: {list: ["{{ input.n }}", "n{{ input.n }}", 3]}, keep: null}')
    assert render(args, NAMES) == {"outer": {"list": [5, "n5", 3]}, "keep": None}


def test_dict_fields_named_like_methods_read_as_the_fields() -> None:
    args = _args(
        '{i: "{{ input.obj.items }}", k: "{{ input.obj.keys }}", g: "{{ input.obj.get }}", '
        'v: "{{ input.obj[\'values\'] }}", s: "{{ input.obj.inner.items[1] }}"}'
    )
    obj = {"items": [1, 2], "keys": "K", "get": "G", "values": 3, "inner": {"items": [7, 8]}}
    names = {"input": {"obj": obj}, "steps": {}}
    assert render(args, names) == {"i": [1, 2], "k": "K", "g": "G", "v": 3, "s": 8}
    # Absent, the field is undefined: never dict.items, dict.keys or dict.get.
    for field in ("items", "keys", "get"):
        with pytest.raises(Unrenderable, match=f"has no attribute '{field}'"):
            render(_one("{{ input.obj." + field + " }}"), {"input": {"obj": {}}})


def test_a_step_results_fields_read_as_the_fields() -> None:
    flow = compiled(
        """
        steps:
          - id: a
            tool: x__a
          - id: b
            tool: x__b
            args: {items: "{{ steps.a.structured.items }}", text: "{{ steps.a.text }}"}
        """
    )
    result = {"content": [{"type": "text", "text": "hi"}], "structuredContent": {"items": [1]}}
    names = {"input": {}, "steps": {"a": step_view("completed", result)}}
    assert render(flow.steps[1].args, names) == {"items": [1], "text": "hi"}


ESCAPES = [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ input.n.__class__ }}",
    "{{ input.obj.__class__ }}",
    "{{ input.obj | attr('__class__') }}",
    "{{ '{0.__class__}'.format(input.n) }}",
    "{{ input.obj.update({'x': 1}) }}",
    "{{ input.list.append(1) }}",
    "call {{ ''.__class__ }} now",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_a_template_cannot_reach_pythons_internals(source: str) -> None:
    """They load (the sandbox judges attributes as they are read) and fail when run."""
    args = _one(source)
    data = {"n": 1, "obj": {}, "list": []}
    with pytest.raises(Unrenderable, match=r"unsafe|has no attribute"):
        render(args, {"input": data, "steps": {}})
    assert data == {"n": 1, "obj": {}, "list": []}


@pytest.mark.parametrize(
    ("source", "said"),
    [
        ("{{ 'x' * 10**7 }}", "'*' would build 10000000 items, more than 100000"),
        ("{{ 10**7 * 'x' }}", "'*' would build 10000000 items, more than 100000"),
        ("a{{ 'x' * 10**7 }}", "'*' would build 10000000 items, more than 100000"),
        ("{{ [1] * 10**6 }}", "'*' would build 1000000 items, more than 100000"),
        ("{{ 2 ** 100 }}", "an exponent past 64 is not computed in a flow template"),
        (
            "{{ 'x' * 99999 }}" * 41,
            f"rendered {41 * 99999} characters, over 4000000",
        ),
        ("{{ ['a' * 100000] * 1000 }}", "'*' would build 100001000 items, more than 100000"),
        ("{{ ([1, 2] * 10) | join('x' * 10000) }}", "join would build 190020 characters"),
    ],
)
def test_building_past_the_limits_is_refused_when_run(source: str, said: str) -> None:
    args = _one(source)  # it loads: a size is known when it runs
    with pytest.raises(Unrenderable, match=re.escape(said)) as caught:
        render(args, NAMES)
    named = source.removeprefix("{{ ").removesuffix(" }}")  # the error names the template
    assert (named if len(source) <= 120 else source[:100]) in str(caught.value)


def test_building_up_to_the_limit_is_fine() -> None:
    assert render(_one("{{ 'x' * " + str(MAX_BUILT) + " }}"), NAMES)["v"] == "x" * MAX_BUILT


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x'.ljust(10**6) }}",
        "{{ 'x'.zfill(10**6) }}",
        "{{ " + " ~ ".join(["('x' * 99999)"] * 41) + " }}",
    ],
)
def test_a_single_expression_is_held_to_the_limit(source: str) -> None:
    with pytest.raises(Unrenderable):
        render(_one(source), NAMES)


@pytest.mark.parametrize("name", ["center", "indent", "format", "wordwrap", "truncate", "replace"])
def test_filters_that_build_to_any_width_are_not_there(name: str) -> None:
    text = org("steps:\n  - id: a\n    tool: x__a\n    args: {v: \"{{ 'x' | " + name + '(9) }}"}\n')
    (only,) = issues(text)
    assert f"No filter named '{name}'" in only


def test_printf_formatting_is_refused_when_run() -> None:
    with pytest.raises(Unrenderable, match="'%' formatting is not available"):
        render(_one("{{ '%99999999d' % 1 }}"), NAMES)


def test_a_power_past_the_bound_is_refused_when_run() -> None:
    with pytest.raises(Unrenderable, match="4,096 bits"):
        render(_one("{{ (10 ** 64) ** 64 }}"), NAMES)


def test_a_string_too_large_to_build_is_unrenderable() -> None:
    with pytest.raises(Unrenderable):
        render(_one("{{ 'x'.ljust(2**62) }}"), NAMES)
