"""schemas.py and defaults.py on their own: what makes an upstream's inputSchema unusable,
and validation and default-filling that no crafted argument can make costly."""

from __future__ import annotations

import json
import socket
from typing import Any

import anyio
import pytest

from gateway.upstreams import defaults, schemas

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("name", ["default", "const", "enum", "examples"])
def test_a_property_named_like_a_data_keyword_is_still_checked(name: str) -> None:
    # Those keywords hold data, not schemas, except as the names of properties (or $defs).
    looping = {"type": "object", "properties": {name: {"$ref": f"#/properties/{name}"}}}
    assert "refers to itself in a loop" in (schemas.problem(looping) or "")
    remote = {"type": "object", "$defs": {name: {"$ref": "http://169.254.169.254/x"}}}
    assert "refers outside itself" in (schemas.problem(remote) or "")
    fine = {"type": "object", "properties": {name: {"type": "string", "default": {"$ref": 1}}}}
    assert schemas.problem(fine) is None


def test_properties_named_like_keywords_are_no_keywords() -> None:
    schema = {"type": "object", "properties": {"$ref": {"type": "string"}, "$id": {}}}
    assert schemas.problem(schema) is None


def test_a_schema_too_large_to_check_cheaply_is_refused() -> None:
    wide = {f"p{i}": {"type": "string", "description": "x" * 40} for i in range(2000)}
    assert schemas.problem({"type": "object", "properties": wide}) == (
        "its inputSchema is larger than 64 KiB"
    )


def test_validation_never_fetches_what_a_schema_names() -> None:
    # problem() refuses such a schema at listing; the validator refuses to fetch anyway.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/s.json"
        schema = {"type": "object", "properties": {"a": {"$ref": url}}}
        found = schemas.argument_problem(json.dumps(schema), {"a": 1})
        assert found is not None
        assert "cannot be used" in found
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected


async def test_unique_items_costs_linear_time_on_crafted_arguments() -> None:
    # jsonschema compares every pair of objects: minutes for this on the loop.
    schema = json.dumps({"type": "object", "properties": {"a": {"uniqueItems": True}}})
    distinct = {"a": [{"k": i} for i in range(6000)]}
    with anyio.fail_after(20):
        found = await anyio.to_thread.run_sync(
            schemas.argument_problem, schema, distinct, abandon_on_cancel=True
        )
    assert found is None
    assert "non-unique" in (schemas.argument_problem(schema, {"a": [{"k": 1}, {"k": 1.0}]}) or "")
    assert schemas.argument_problem(schema, {"a": [1, True, "1", None, 0, False]}) is None


async def test_large_arguments_are_validated_off_the_loop_with_a_deadline() -> None:
    schema = json.dumps({"type": "object", "properties": {"a": {"type": "string"}}})
    assert await schemas.check_arguments(schema, {"a": "x" * 100_000}) is None
    found = await schemas.check_arguments(schema, {"a": ["x" * 100_000]})
    assert found is not None
    assert "is not of type 'string'" in found


def test_defaults_are_filled_without_copying_what_they_do_not_touch() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "amount": {"type": "number", "default": 1000},
            "payment": {"$ref": "#/$defs/Payment"},
            "items": {"type": "array", "items": {"$ref": "#item"}},
        },
        "$defs": {
            "Payment": {"properties": {"method": {"default": "wire"}}},
            "Item": {"$anchor": "item", "properties": {"qty": {"default": 5}}},
        },
    }
    deep: Any = {"x": 1}
    for _ in range(900):  # deeper than Python's recursion would copy
        deep = {"x": deep}
    given = {"payment": {}, "items": [{}, {"qty": 1}], "deep": deep}
    paths = ["amount", "payment.method", "items.*.qty"]
    filled = defaults.with_defaults(schema, given, paths)
    assert filled == {
        "payment": {"method": "wire"},
        "items": [{"qty": 5}, {"qty": 1}],
        "deep": deep,
        "amount": 1000,
    }
    assert filled["deep"] is deep  # shared, not copied
    assert given == {"payment": {}, "items": [{}, {"qty": 1}], "deep": deep}  # unchanged
    complete = {"amount": 1, "payment": {"method": "card"}, "items": []}
    assert defaults.with_defaults(schema, complete, paths) is complete
