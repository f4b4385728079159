"""Argument scopes: every constraint type, with the reason a person reads."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.tags.model import ArgumentConstraint
from gateway.tags.scopes import check_scope


def reasons(scope: dict[str, Any], arguments: dict[str, Any]) -> list[str]:
    built = {path: ArgumentConstraint.model_validate(rule) for path, rule in scope.items()}
    return [str(v) for v in check_scope("tool_refund_small", built, arguments)]


AMOUNT = {"amount": {"min": 0.01, "max": 100}}


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"amount": 50}, []),
        ({"amount": 100}, []),
        ({"amount": 0.01}, []),
        (
            {},
            [
                "amount is missing and the tool declares no default for it, so it could "
                "escape min 0.01, max 100 set by tag tool_refund_small"
            ],
        ),
        ({"amount": 250}, ["amount 250 exceeds max 100 set by tag tool_refund_small"]),
        ({"amount": 100.5}, ["amount 100.5 exceeds max 100 set by tag tool_refund_small"]),
        ({"amount": 0}, ["amount 0 is below min 0.01 set by tag tool_refund_small"]),
        (
            {"amount": "50"},
            ['amount must be a number (got text "50") set by tag tool_refund_small'],
        ),
        (
            {"amount": True},
            ["amount must be a number (got a boolean true) set by tag tool_refund_small"],
        ),
        ({"amount": None}, ["amount must be a number (got null) set by tag tool_refund_small"]),
        (
            {"amount": float("nan")},
            ["amount NaN is not a finite number set by tag tool_refund_small"],
        ),
        (
            {"amount": float("inf")},
            ["amount Infinity is not a finite number set by tag tool_refund_small"],
        ),
    ],
)
def test_min_max(arguments: dict[str, Any], expected: list[str]) -> None:
    assert reasons(AMOUNT, arguments) == expected


def test_an_absent_argument_passes_a_bound_only_where_the_tag_says_it_may() -> None:
    # The upstream may fill in a value of its own (a default it does not declare), which
    # would escape every value check: absent fails them, unless the tag says otherwise.
    for rule in ({"max": 100}, {"pattern": "ORD-[0-9]+"}, {"enum": ["USD"]}, {"const": 1}):
        assert reasons({"x": rule}, {}) != []
        assert reasons({"x": {**rule, "optional": True}}, {}) == []
        assert reasons({"x": {**rule, "optional": True}}, {"x": 1000}) != []  # still checked
    assert reasons({"x": {"forbidden": True}}, {}) == []
    assert reasons({"items.*.qty": {"max": 10}}, {"items": [{"qty": 1}, {}]}) == [
        "items[1].qty is missing and the tool declares no default for it, so it could "
        "escape max 10 set by tag tool_refund_small"
    ]
    with pytest.raises(ValueError, match="both required and optional"):
        ArgumentConstraint.model_validate({"required": True, "optional": True, "max": 1})


def test_required_and_forbidden() -> None:
    scope = {"order_id": {"required": True}, "override": {"forbidden": True}}
    assert reasons(scope, {"order_id": "x"}) == []
    assert reasons(scope, {}) == ["order_id is required set by tag tool_refund_small"]
    assert reasons(scope, {"order_id": "x", "override": False}) == [
        "override is not allowed set by tag tool_refund_small"
    ]
    # null is present: a forbidden key may not be sent at all
    assert reasons(scope, {"order_id": None, "override": None}) == [
        "override is not allowed set by tag tool_refund_small"
    ]


def test_enum_compares_with_type() -> None:
    scope = {
        "currency": {"enum": ["USD", "EUR"], "optional": True},
        "level": {"enum": [1, 2], "optional": True},
    }
    assert reasons(scope, {"currency": "EUR", "level": 2.0}) == []
    assert reasons(scope, {"currency": "GBP"}) == [
        'currency "GBP" is not one of "USD", "EUR" set by tag tool_refund_small'
    ]
    assert reasons(scope, {"level": True}) == [
        "level true is not one of 1, 2 set by tag tool_refund_small"
    ]
    assert reasons(scope, {"level": "1"}) == [
        'level "1" is not one of 1, 2 set by tag tool_refund_small'
    ]


def test_const() -> None:
    scope = {
        "mode": {"const": "dry_run", "optional": True},
        "opts": {"const": {"a": [1, True]}, "optional": True},
    }
    assert reasons(scope, {"mode": "dry_run", "opts": {"a": [1.0, True]}}) == []
    assert reasons(scope, {"mode": "live"}) == [
        'mode must be "dry_run" (got "live") set by tag tool_refund_small'
    ]
    assert reasons(scope, {"opts": {"a": [True, 1]}}) == [
        'opts must be {"a": [1, true]} (got {"a": [true, 1]}) set by tag tool_refund_small'
    ]


def test_pattern_is_a_full_match() -> None:
    scope = {"order_id": {"pattern": "ORD-[0-9]{6}"}}
    assert reasons(scope, {"order_id": "ORD-123456"}) == []
    assert reasons(scope, {"order_id": "ORD-1234567"}) == [
        "order_id \"ORD-1234567\" does not match pattern 'ORD-[0-9]{6}' "
        "set by tag tool_refund_small"
    ]
    assert reasons(scope, {"order_id": "xORD-123456"}) != []
    assert reasons(scope, {"order_id": 123456}) == [
        "order_id must be text (got a number 123456) set by tag tool_refund_small"
    ]


def test_max_length_for_text_and_arrays() -> None:
    scope = {
        "note": {"max_length": 5, "optional": True},
        "items": {"max_length": 2, "optional": True},
    }
    assert reasons(scope, {"note": "héllo", "items": [1, 2]}) == []
    assert reasons(scope, {"note": "toolong"}) == [
        "note is 7 characters long, over max_length 5 set by tag tool_refund_small"
    ]
    assert reasons(scope, {"items": [1, 2, 3]}) == [
        "items has 3 items, over max_length 2 set by tag tool_refund_small"
    ]
    assert reasons(scope, {"note": 5}) == [
        "note must be text or an array (got a number) set by tag tool_refund_small"
    ]


def test_nested_paths() -> None:
    scope = {"payment.amount": {"max": 100, "required": True}}
    assert reasons(scope, {"payment": {"amount": 10}}) == []
    assert reasons(scope, {"payment": {"amount": 101}}) == [
        "payment.amount 101 exceeds max 100 set by tag tool_refund_small"
    ]
    assert reasons(scope, {}) == ["payment.amount is required set by tag tool_refund_small"]
    assert reasons(scope, {"payment": {}}) == [
        "payment.amount is required set by tag tool_refund_small"
    ]


def test_a_container_of_the_wrong_shape_cannot_sidestep_a_nested_scope() -> None:
    scope = {"payment.amount": {"max": 100}}
    assert reasons(scope, {"payment": [{"amount": 1000}]}) == [
        "payment must be an object (got an array) set by tag tool_refund_small"
    ]
    assert reasons(scope, {"payment": "1000"}) == [
        "payment must be an object (got text) set by tag tool_refund_small"
    ]


def test_wildcard_checks_every_element() -> None:
    scope = {
        "items.*.qty": {"max": 10, "optional": True},
        "tags.*": {"enum": ["a", "b"], "optional": True},
    }
    assert reasons(scope, {"items": [{"qty": 1}, {"qty": 10}], "tags": ["a"]}) == []
    assert reasons(scope, {"items": [{"qty": 1}, {"qty": 11}], "tags": ["a", "c"]}) == [
        "items[1].qty 11 exceeds max 10 set by tag tool_refund_small",
        'tags[1] "c" is not one of "a", "b" set by tag tool_refund_small',
    ]
    assert reasons(scope, {"items": {"x": {"qty": 12}}}) == [
        "items.x.qty 12 exceeds max 10 set by tag tool_refund_small"
    ]
    assert reasons(scope, {"items": 5}) == [
        "items must be an array or object (got a number) set by tag tool_refund_small"
    ]


def test_all_violations_are_reported() -> None:
    scope = {"amount": {"max": 1}, "currency": {"enum": ["USD"]}}
    assert len(reasons(scope, {"amount": 2, "currency": "EUR"})) == 2
