"""The catalog over resources, resource templates and prompts: routing and clashes."""

from __future__ import annotations

import mcp_types as types
import pytest

from gateway.upstreams.catalog import AmbiguousResource, build
from gateway.upstreams.listing import Offer


def offer(*templates: str, resources: tuple[str, ...] = (), prompts: tuple[str, ...] = ()) -> Offer:
    return Offer(
        resources=tuple(types.Resource(name=uri, uri=uri) for uri in resources),
        templates=tuple(types.ResourceTemplate(name=t, uri_template=t) for t in templates),
        prompts=tuple(types.Prompt(name=name) for name in prompts),
    )


def test_resources_route_by_uri_then_by_template() -> None:
    catalog = build(
        1,
        {
            "files": ("files__", offer("file:///{+path}", resources=("file:///readme",))),
            "crm": ("crm__", offer("crm://customers/{id}", prompts=("summary",))),
        },
    )
    assert catalog.problems == ()
    assert catalog.resource_upstream("file:///readme") == "files"
    assert catalog.resource_upstream("file:///srv/a/b.txt") == "files"
    assert catalog.resource_upstream("crm://customers/42") == "crm"
    assert catalog.resource_upstream("crm://orders/42") is None
    assert catalog.resource_upstream("https://example.com/") is None
    assert list(catalog.prompts) == ["crm__summary"]
    assert catalog.prompts["crm__summary"].prompt.name == "summary"
    assert [t.template.uri_template for t in catalog.templates] == [
        "crm://customers/{id}",
        "file:///{+path}",
    ]


def test_a_uri_listed_by_one_upstream_wins_over_another_ones_template() -> None:
    catalog = build(
        1,
        {"a": ("a__", offer(resources=("x://one",))), "b": ("b__", offer("x://{name}"))},
    )
    assert catalog.resource_upstream("x://one") == "a"
    assert catalog.resource_upstream("x://two") == "b"


def test_overlapping_templates_of_two_upstreams_refuse_to_guess() -> None:
    catalog = build(1, {"a": ("a__", offer("x://{name}")), "b": ("b__", offer("x://{+rest}"))})
    assert catalog.clashes == ()  # different templates: only some URIs are ambiguous
    with pytest.raises(AmbiguousResource, match="'x://n' matches templates of 'a' and 'b'"):
        catalog.resource_upstream("x://n")
    assert catalog.resource_upstream("x://deep/path") == "b"


def test_an_invalid_template_is_left_out_with_the_reason() -> None:
    catalog = build(1, {"a": ("a__", offer("x://{a}{b}", "y://{ok}"))})
    assert [t.template.uri_template for t in catalog.templates] == ["y://{ok}"]
    assert len(catalog.problems) == 1
    assert catalog.problems[0].startswith("upstream 'a': resource template 'x://{a}{b}' left out: ")


def test_one_upstream_listing_a_name_twice_is_a_clash_too() -> None:
    catalog = build(1, {"a": ("", offer(resources=("x://1", "x://1"), prompts=("p", "p")))})
    assert catalog.resources == {}
    assert catalog.prompts == {}
    assert catalog.clashes == (
        "resource 'x://1' is offered by 'a' twice; left out until only one upstream offers it",
        "prompt name 'p' is offered by 'a' twice; left out until the upstreams' prefixes tell "
        "them apart",
    )
