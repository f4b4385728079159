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

`with_defaults` fills in the defaults a schema declares, for the scoped arguments a call
leaves out, so that a scope checks the value the upstream will use.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import jsonschema
import re2
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

QUIET = re2.Options()
QUIET.log_errors = False  # a pattern RE2 refuses is an answer, not a line on stderr

MAX_DEPTH = 64
"""Schemas nested deeper than this are refused: no tool needs it, and walking one is work."""

MAX_NODES = 20_000
"""Subschemas in one schema at most, for the same reason."""

_IN_PLACE = ("allOf", "anyOf", "oneOf")
"""Applicators whose members apply to the same instance: a `$ref` cycle through these
alone never reaches the end of the argument, and recurses until the stack runs out."""
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_MAP = ("dependentSchemas",)


def problem(schema: Any) -> str | None:
    """Why `schema` cannot be used as a tool's inputSchema, or None when it can."""
    if not isinstance(schema, dict):
        return f"its inputSchema is {_kind(schema)}, not a JSON Schema object"
    nodes = list(_subschemas(schema))
    if len(nodes) > MAX_NODES:
        return f"its inputSchema has more than {MAX_NODES} subschemas"
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
                if _resolve(schema, target) is None:
                    return f"its inputSchema has a {keyword} that resolves to nothing: {target!r}"
    loop = _in_place_loop(schema, nodes)
    if loop is not None:
        return f"its inputSchema refers to itself in a loop ({loop})"
    try:
        _validator_class(schema).check_schema(schema)
    except SchemaError as exc:
        return f"its inputSchema is not a valid JSON Schema: {exc.message}"
    return None


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


def with_defaults(
    schema: Mapping[str, Any], arguments: Mapping[str, Any], paths: Iterable[str]
) -> Mapping[str, Any]:
    """`arguments` with the defaults `schema` declares for the argument paths in `paths`
    (`amount`, `payment.method`, `items.*.qty`) that they leave out; `arguments` itself
    when nothing is filled in, else a copy (the caller's value is never changed)."""
    filled: dict[str, Any] | None = None
    for path in paths:
        if filled is None:
            if not _fills(schema, arguments, path.split(".")):
                continue
            filled = copy.deepcopy(dict(arguments))
        _fill(schema, schema, filled, path.split("."))
    return arguments if filled is None else filled


def _fills(root: Mapping[str, Any], value: Any, parts: list[str]) -> bool:
    """Whether `_fill` would add anything (so that a call needing nothing copies nothing)."""
    probe = copy.deepcopy(value)
    return isinstance(probe, dict) and _fill(root, root, probe, parts)


def _fill(root: Mapping[str, Any], schema: Any, value: Any, parts: list[str]) -> bool:
    head, rest = parts[0], parts[1:]
    changed = False
    if head == "*":
        if isinstance(value, list):
            member = _member(root, schema, "items")
            pairs: Iterable[Any] = value
        elif isinstance(value, dict):
            member = _member(root, schema, "additionalProperties")
            pairs = value.values()
        else:
            return False
        if member is None or not rest:
            return False
        for item in pairs:
            if isinstance(item, dict | list):
                changed |= _fill(root, member, item, rest)
        return changed
    if not isinstance(value, dict):
        return False
    member = _property(root, schema, head)
    if member is None:
        return False
    if head not in value and "default" in member:
        value[head] = copy.deepcopy(member["default"])
        changed = True
    if rest and isinstance(value.get(head), dict | list):
        changed |= _fill(root, member, value[head], rest)
    return changed


def _property(root: Mapping[str, Any], schema: Any, name: str) -> dict[str, Any] | None:
    """The subschema of property `name` in `schema`, looking through `$ref` and `allOf`."""
    for node in _alike(root, schema):
        properties = node.get("properties")
        if isinstance(properties, dict) and isinstance(properties.get(name), dict):
            found = _follow(root, properties[name])
            if found is not None:
                return found
    return None


def _member(root: Mapping[str, Any], schema: Any, keyword: str) -> dict[str, Any] | None:
    for node in _alike(root, schema):
        if isinstance(node.get(keyword), dict):
            return _follow(root, node[keyword])
    return None


def _alike(root: Mapping[str, Any], schema: Any) -> Iterator[dict[str, Any]]:
    """`schema` and the members of its `allOf`, each with its `$ref` followed."""
    node = _follow(root, schema)
    if node is None:
        return
    yield node
    for member in node.get("allOf", ()) if isinstance(node.get("allOf"), list) else ():
        followed = _follow(root, member)
        if followed is not None:
            yield followed


def _follow(root: Mapping[str, Any], schema: Any) -> dict[str, Any] | None:
    """`schema` with its local `$ref` followed (a bounded number of times). Where the node
    has a `default` of its own beside the `$ref`, that default is kept."""
    node = schema
    for _ in range(MAX_DEPTH):
        if not isinstance(node, dict):
            return None
        target = node.get("$ref")
        if not isinstance(target, str):
            return node
        resolved = _resolve(root, target)
        if resolved is None:
            return node
        if "default" in node and isinstance(resolved, dict) and "default" not in resolved:
            resolved = {**resolved, "default": node["default"]}
        node = resolved
    return None


def _resolve(root: Mapping[str, Any], target: str) -> Any:
    """The node a same-document reference (`#`, `#/a/b`, `#anchor`) names, or None."""
    fragment = unquote(target[1:])
    if not fragment:
        return root
    if not fragment.startswith("/"):
        for _, anchored, _ in _subschemas(dict(root)):
            if fragment in (anchored.get("$anchor"), anchored.get("$dynamicAnchor")):
                return anchored
        return None
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
    """(JSON pointer, node, depth) for every object in the schema document, walked with a
    stack of our own (a deep document must not exhaust Python's)."""
    stack: list[tuple[str, Any, int]] = [("", schema, 0)]
    seen = 0
    while stack:
        pointer, node, depth = stack.pop()
        if isinstance(node, dict):
            seen += 1
            yield pointer, node, depth
            if depth > MAX_DEPTH or seen > MAX_NODES:
                return
            for key, child in node.items():
                if key in ("default", "const", "enum", "examples"):
                    continue  # values, not schemas
                if isinstance(child, dict | list):
                    escaped = str(key).replace("~", "~0").replace("/", "~1")
                    stack.append((f"{pointer}/{escaped}", child, depth + 1))
        elif isinstance(node, list):
            if depth > MAX_DEPTH:
                yield pointer, {}, depth
                return
            for index, child in enumerate(node):
                if isinstance(child, dict | list):
                    stack.append((f"{pointer}/{index}", child, depth + 1))


def _in_place_loop(
    root: dict[str, Any], nodes: list[tuple[str, dict[str, Any], int]]
) -> str | None:
    """A cycle of references that applies a schema to the same instance again, as
    `#/$defs/a` → `#/$defs/a`, or None. References under `properties`, `items` and the
    like descend into the argument, so they end with it (a tree of any depth is fine)."""
    by_id = {id(node): pointer for pointer, node, _ in nodes}

    def edges(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for keyword in ("$ref", "$dynamicRef"):
            target = node.get(keyword)
            if isinstance(target, str):
                resolved = _resolve(root, target)
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


def _re2_pattern(
    validator: Validator, pattern: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string") or not isinstance(pattern, str):
        return
    compiled = _compiled(pattern)
    if compiled is not None and compiled.search(instance) is None:
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
            if compiled.search(key) is not None:
                yield from validator.descend(  # type: ignore[attr-defined]
                    value, subschema, path=key, schema_path=pattern
                )


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re2._Regexp[str] | None:
    try:
        return re2.compile(pattern, QUIET)
    except re2.error:
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
        cls, {"pattern": _re2_pattern, "patternProperties": _re2_pattern_properties}
    )
    validator: Validator = safe(schema, registry=_NOWHERE)
    return validator


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__
