"""Tool input schemas: untrusted input from upstreams, made safe to use.

An upstream's `inputSchema` decides how the gateway validates every caller's arguments, so
a hostile or careless upstream can aim it at the gateway: a `$ref` to a URL (which
jsonschema would fetch, synchronously, on the event loop: a request to any host the
gateway reaches), a `$ref` loop (a RecursionError on every call), a `pattern` that
backtracks for seconds on a crafted argument while every other caller waits. So:

- `problem` is asked when a tool is listed: a schema it finds fault with drops the tool,
  with the reason, before any call can use it;
- a validator never retrieves anything (its registry refuses), and matches `pattern` and
  `patternProperties` with RE2, whose matching time is linear in the text. A pattern RE2
  cannot compile (lookaround, backreferences) is left to the upstream, which checks its
  own schema anyway: the gateway's own boundary is the tags' scopes, not this.

defaults.py fills in the defaults a schema declares, through the same references.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import anyio
import jsonschema
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

from .. import jsoncodec
from ..identitycache import IdentityCache
from ..linear_regex import LinearPattern, PatternError

MAX_DEPTH = 64
"""Schemas nested deeper than this are refused: no tool needs it, and walking one is work."""

MAX_NODES = 5_000
"""Objects in one schema at most, for the same reason (checking one against its
metaschema costs about a millisecond per subschema)."""

MAX_BYTES = 64 * 1024
"""A schema's size as JSON at most."""

LISTING_BYTES = 1024 * 1024
"""The schemas of one upstream's listing together, as JSON, at most: what is checked once
per distinct schema is bounded per listing too."""

LARGE_ARGUMENTS = 32 * 1024
"""Arguments larger than this (as JSON) are validated in a worker thread, with a deadline,
so that no caller's arguments can hold the event loop however a schema makes them cost."""

VALIDATION_SECONDS = 5.0

_SCHEMA_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)
"""Keywords whose value maps names (any names) to schemas."""
_VALUES = frozenset({"default", "const", "enum", "examples"})
"""Keywords whose value is data, not schemas."""

_IN_PLACE = ("allOf", "anyOf", "oneOf")
"""Applicators whose members apply to the same instance: a `$ref` cycle through these
alone never reaches the end of the argument, and recurses until the stack runs out."""
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_MAP = ("dependentSchemas",)


def problem(schema: Any, text: str | None = None) -> str | None:
    """Why `schema` cannot be used as a tool's inputSchema, or None when it can; `text`:
    its `schema_text`, when the caller has it already. The same schema (as JSON) is judged
    once: listings repeat. Checking a large one takes a second or more of CPU: call this
    off the event loop (guard.py does)."""
    if not isinstance(schema, dict):
        return f"its inputSchema is {jsoncodec.type_name(schema)}, not a JSON Schema object"
    if text is None:
        text = schema_text(schema)
    if text is None:
        return "its inputSchema cannot be written as JSON"
    if len(text) > MAX_BYTES:
        return f"its inputSchema is larger than {MAX_BYTES // 1024} KiB"
    return _problem(text)


def schema_text(schema: Any) -> str | None:
    """`schema` as canonical JSON (what validators and judgements are kept by), or None
    when it cannot be written (too deep, say)."""
    try:
        return json.dumps(schema, sort_keys=True, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):
        return None


@lru_cache(maxsize=4096)
def _problem(text: str) -> str | None:
    schema: dict[str, Any] = json.loads(text)
    nodes = list(_subschemas(schema))
    if len(nodes) > MAX_NODES:
        return f"its inputSchema has more than {MAX_NODES} subschemas"
    anchors = _anchors(nodes)
    for pointer, node, depth in nodes:
        if depth > MAX_DEPTH:
            return f"its inputSchema is nested more than {MAX_DEPTH} levels deep"
        if pointer and "$id" in node:
            return f"its inputSchema embeds a schema resource ($id at {pointer or '/'})"
        for keyword in ("$ref", "$dynamicRef"):
            if keyword in node:
                target = node[keyword]
                if not isinstance(target, str) or not target.startswith("#"):
                    return (
                        f"its inputSchema refers outside itself ({keyword} {target!r} at "
                        f"{pointer or '/'}); the gateway fetches nothing an upstream names"
                    )
                if resolve(schema, target, anchors) is None:
                    return f"its inputSchema has a {keyword} that resolves to nothing: {target!r}"
    loop = _in_place_loop(schema, nodes, anchors)
    if loop is not None:
        return f"its inputSchema refers to itself in a loop ({loop})"
    try:
        _validator_class(schema).check_schema(schema)
    except SchemaError as exc:
        return f"its inputSchema is not a valid JSON Schema: {exc.message}"
    return None


async def check_arguments(schema_text: str, arguments: Mapping[str, Any]) -> str | None:
    """`argument_problem`, off the event loop (bounded by VALIDATION_SECONDS) for large
    arguments, where validating may cost more than a call should hold every caller up."""
    try:
        size = len(jsoncodec.dumps(arguments))
    except ValueError:
        size = LARGE_ARGUMENTS + 1
    if size <= LARGE_ARGUMENTS:
        return argument_problem(schema_text, arguments)
    with anyio.move_on_after(VALIDATION_SECONDS):
        return await anyio.to_thread.run_sync(
            argument_problem, schema_text, arguments, abandon_on_cancel=True
        )
    return f"the arguments could not be checked against the inputSchema in {VALIDATION_SECONDS:g} s"


def argument_problem(schema_text: str, arguments: Mapping[str, Any]) -> str | None:
    """What is wrong with `arguments` under the schema whose canonical JSON is
    `schema_text`, or None when they fit."""
    validator = _validator(schema_text)
    try:
        if validator.is_valid(arguments):  # the usual case, and cheaper than collecting errors
            return None
        error = jsonschema.exceptions.best_match(validator.iter_errors(dict(arguments)))
    except RecursionError:
        return "the arguments are nested too deeply to be checked"
    except Unresolvable as exc:  # cannot happen for a schema `problem` passed
        return f"its inputSchema cannot be used: {exc}"
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


Anchors = dict[str, dict[str, Any]]


def _anchors(nodes: Iterable[tuple[str, dict[str, Any], int]]) -> Anchors:
    """`$anchor` and `$dynamicAnchor` names → their schemas (the first of a name wins)."""
    found: Anchors = {}
    for _, node, _ in nodes:
        for keyword in ("$anchor", "$dynamicAnchor"):
            name = node.get(keyword)
            if isinstance(name, str):
                found.setdefault(name, node)
    return found


def _index(schema: dict[str, Any]) -> Anchors:
    return _anchors(_subschemas(schema))


_ANCHOR_INDEX: IdentityCache[dict[str, Any], Anchors] = IdentityCache()
"""Per kept schema (a catalog's), its anchors: found once, not per call."""


def anchors_of(schema: Mapping[str, Any]) -> Anchors:
    """The `$anchor`s of `schema`, by name."""
    if isinstance(schema, dict):
        return _ANCHOR_INDEX.get(schema, _index)
    return _index(dict(schema))


def resolve(root: Mapping[str, Any], target: str, anchors: Anchors) -> Any:
    """The node a same-document reference (`#`, `#/a/b`, `#anchor`) names, or None."""
    fragment = unquote(target[1:])
    if not fragment:
        return root
    if not fragment.startswith("/"):
        return anchors.get(fragment)
    node: Any = root
    for token in fragment[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node


def _subschemas(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], int]]:
    """(JSON pointer, node, depth) for every schema in the schema document, walked with a
    stack of our own (a deep document must not exhaust Python's). Data (`default`,
    `const`, `enum`, `examples`) is no schema; the members of a map of schemas
    (`properties`, `$defs`, ...) are schemas whatever their names, `default` included."""
    stack: list[tuple[str, Any, int]] = [("", schema, 0)]
    seen = 0
    while stack:
        pointer, node, depth = stack.pop()
        if isinstance(node, list):
            if depth > MAX_DEPTH:
                yield pointer, {}, depth
                return
            for index, child in enumerate(node):
                if isinstance(child, dict | list):
                    stack.append((f"{pointer}/{index}", child, depth + 1))
            continue
        if not isinstance(node, dict):
            continue
        seen += 1
        yield pointer, node, depth
        if depth > MAX_DEPTH or seen > MAX_NODES:
            return
        for key, child in node.items():
            if key in _VALUES or not isinstance(child, dict | list):
                continue
            where = f"{pointer}/{_escape(key)}"
            if key in _SCHEMA_MAPS and isinstance(child, dict):
                for name, member in child.items():
                    if isinstance(member, dict | list):
                        stack.append((f"{where}/{_escape(name)}", member, depth + 2))
            else:
                stack.append((where, child, depth + 1))


def _escape(key: Any) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def _in_place_loop(
    root: dict[str, Any], nodes: list[tuple[str, dict[str, Any], int]], anchors: Anchors
) -> str | None:
    """A cycle of references that applies a schema to the same instance again, as
    `#/$defs/a` → `#/$defs/a`, or None. References under `properties`, `items` and the
    like descend into the argument, so they end with it (a tree of any depth is fine)."""
    by_id = {id(node): pointer for pointer, node, _ in nodes}

    def edges(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for keyword in ("$ref", "$dynamicRef"):
            target = node.get(keyword)
            if isinstance(target, str):
                resolved = resolve(root, target, anchors)
                if isinstance(resolved, dict):
                    yield resolved
        for keyword in _IN_PLACE:
            members = node.get(keyword)
            if isinstance(members, list):
                yield from (member for member in members if isinstance(member, dict))
        for keyword in _IN_PLACE_ONE:
            if isinstance(node.get(keyword), dict):
                yield node[keyword]
        for keyword in _IN_PLACE_MAP:
            members = node.get(keyword)
            if isinstance(members, dict):
                yield from (member for member in members.values() if isinstance(member, dict))

    done: set[int] = set()
    for _, start, _ in nodes:
        if id(start) in done:
            continue
        # Depth-first with an explicit stack; `path` holds the nodes of the current branch.
        path: list[int] = []
        on_path: set[int] = set()
        stack: list[tuple[dict[str, Any], Iterator[dict[str, Any]]]] = [(start, edges(start))]
        path.append(id(start))
        on_path.add(id(start))
        while stack:
            node, pending = stack[-1]
            child = next(pending, None)
            if child is None:
                stack.pop()
                on_path.discard(path.pop())
                done.add(id(node))
                continue
            if id(child) in on_path:
                return f"{by_id.get(id(child), '?') or '#'} is reached again without descending"
            if id(child) in done:
                continue
            stack.append((child, edges(child)))
            path.append(id(child))
            on_path.add(id(child))
    return None


def _refuse(uri: str) -> Resource[Any]:
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


_NOWHERE: Registry[Any] = Registry(retrieve=_refuse)  # type: ignore[call-arg]
"""A registry that retrieves nothing: a schema's references stay inside the schema."""


def _unique_items(
    validator: Validator, unique: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    """jsonschema compares every pair of items, which a crafted argument makes quadratic;
    here each item is reduced to a canonical form once (1 and 1.0 alike, true not 1)."""
    if unique is not True or not validator.is_type(instance, "array"):
        return
    seen: set[str] = set()
    for item in instance:
        key = json.dumps(_canonical(item), sort_keys=True, separators=(",", ":"))
        if key in seen:
            yield ValidationError(f"{_short(instance)} has non-unique elements")
            return
        seen.add(key)


def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return int(value) if float(value).is_integer() else value
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _re2_pattern(
    validator: Validator, pattern: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string") or not isinstance(pattern, str):
        return
    compiled = _compiled(pattern)
    if compiled is not None and not compiled.search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _re2_pattern_properties(
    validator: Validator, patterns: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object") or not isinstance(patterns, dict):
        return
    for pattern, subschema in patterns.items():
        compiled = _compiled(pattern)
        if compiled is None:
            continue
        for key, value in instance.items():
            if compiled.search(key):
                yield from validator.descend(  # type: ignore[attr-defined]
                    value, subschema, path=key, schema_path=pattern
                )


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> LinearPattern | None:
    try:
        return LinearPattern(pattern)
    except PatternError:
        return None  # RE2 cannot run it in linear time: the upstream checks its own


def _validator_class(schema: Mapping[str, Any]) -> type[Validator]:
    cls: type[Validator] = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft202012Validator
    )
    return cls


@lru_cache(maxsize=2048)
def _validator(schema_text: str) -> Validator:
    """A validator per distinct schema (building one costs more than validating)."""
    schema = json.loads(schema_text)
    cls = _validator_class(schema)
    safe = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        cls,
        {
            "pattern": _re2_pattern,
            "patternProperties": _re2_pattern_properties,
            "uniqueItems": _unique_items,
        },
    )
    validator: Validator = safe(schema, registry=_NOWHERE)
    return validator
