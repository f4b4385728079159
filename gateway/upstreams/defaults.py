"""Filling in the defaults a tool's inputSchema declares, for the scoped arguments a call
leaves out, so that a scope checks the value the upstream will use (policy.check's
`fill`). References are followed as schemas.py resolves them: inside the schema only.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .schemas import MAX_DEPTH, Anchors, anchors_of, resolve


def with_defaults(
    schema: Mapping[str, Any], arguments: Mapping[str, Any], paths: Iterable[str]
) -> Mapping[str, Any]:
    """`arguments` with the defaults `schema` declares for the argument paths in `paths`
    (`amount`, `payment.method`, `items.*.qty`) that they leave out: `arguments` itself
    when nothing is filled in, else a copy of the containers on the filled paths only (the
    caller's value is never changed, and however deep it is, nothing else is copied)."""
    anchors = anchors_of(schema)
    value: Any = arguments
    for path in paths:
        value = _fill(schema, anchors, schema, value, path.split("."))
    return value if isinstance(value, Mapping) else arguments


def _fill(
    root: Mapping[str, Any], anchors: Anchors, schema: Any, value: Any, parts: list[str]
) -> Any:
    """`value` with the defaults for `parts` filled in: the same object when nothing is,
    else a shallow copy with the changed members replaced."""
    head, rest = parts[0], parts[1:]
    if head == "*":
        if not rest:
            return value
        if isinstance(value, list):
            member = _member(root, anchors, schema, "items")
            if member is None:
                return value
            items = [_fill(root, anchors, member, item, rest) for item in value]
            changed = any(new is not old for new, old in zip(items, value, strict=True))
            return items if changed else value
        if isinstance(value, dict):
            member = _member(root, anchors, schema, "additionalProperties")
            if member is None:
                return value
            entries = {key: _fill(root, anchors, member, item, rest) for key, item in value.items()}
            changed = any(entries[key] is not value[key] for key in value)
            return entries if changed else value
        return value
    if not isinstance(value, Mapping):
        return value
    member = _property(root, anchors, schema, head)
    if member is None:
        return value
    current = value.get(head, _MISSING)
    if current is _MISSING and "default" in member:
        try:
            current = copy.deepcopy(member["default"])
        except RecursionError:  # a default too deep to copy: as if none were declared
            return value
    elif current is _MISSING:
        return value
    if rest and isinstance(current, dict | list):
        current = _fill(root, anchors, member, current, rest)
    if head in value and current is value[head]:
        return value
    return {**value, head: current}


_MISSING = object()


def _property(
    root: Mapping[str, Any], anchors: Anchors, schema: Any, name: str
) -> dict[str, Any] | None:
    """The subschema of property `name` in `schema`, looking through `$ref` and `allOf`."""
    for node in _alike(root, anchors, schema):
        properties = node.get("properties")
        if isinstance(properties, dict) and isinstance(properties.get(name), dict):
            found = _follow(root, anchors, properties[name])
            if found is not None:
                return found
    return None


def _member(
    root: Mapping[str, Any], anchors: Anchors, schema: Any, keyword: str
) -> dict[str, Any] | None:
    for node in _alike(root, anchors, schema):
        if isinstance(node.get(keyword), dict):
            return _follow(root, anchors, node[keyword])
    return None


def _alike(root: Mapping[str, Any], anchors: Anchors, schema: Any) -> Iterator[dict[str, Any]]:
    """`schema` and the members of its `allOf`, each with its `$ref` followed."""
    node = _follow(root, anchors, schema)
    if node is None:
        return
    yield node
    for member in node.get("allOf", ()) if isinstance(node.get("allOf"), list) else ():
        followed = _follow(root, anchors, member)
        if followed is not None:
            yield followed


def _follow(root: Mapping[str, Any], anchors: Anchors, schema: Any) -> dict[str, Any] | None:
    """`schema` with its local `$ref` followed (a bounded number of times). Where the node
    has a `default` of its own beside the `$ref`, that default is kept."""
    node = schema
    for _ in range(MAX_DEPTH):
        if not isinstance(node, dict):
            return None
        target = node.get("$ref")
        if not isinstance(target, str):
            return node
        resolved = resolve(root, target, anchors)
        if resolved is None:
            return node
        if "default" in node and isinstance(resolved, dict) and "default" not in resolved:
            resolved = {**resolved, "default": node["default"]}
        node = resolved
    return None
