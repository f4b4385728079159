"""Property-based fuzzing of the session API from its own /openapi.json (schemathesis), on
a gateway process: no 5xx and no answer outside the document, whatever a client sends;
and object-level authorization between two identities: any operation on another user's
session is answered exactly as one on an id that does not exist."""

from __future__ import annotations

import hashlib
import json
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.harness import clarify, reply
from tests.helpers import clean_env, serving

KEYS = {"alice": "alice-fuzz-key-0123456789", "bob": "bob-fuzz-key-0123456789"}
TAGS = """
users:
  alice: {roles: [support]}
  bob: {roles: [support]}
tags:
  - tag: support
    kind: role
    payload:
      content: "You help."
      config: {assigned_roles: [support], allowed_tools: []}
"""
EXAMPLES = 100
"""Cases per operation: bounded, so the suite stays in scripts/test's time."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def _headers(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[user]}"}


def _post(base: str, path: str, body: dict[str, Any], user: str) -> Any:
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={**_headers(user), "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("fuzz")
    (directory / "orgs").mkdir()
    (directory / "orgs" / "acme.yaml").write_text(TAGS)
    (directory / "script.yaml").write_text(json.dumps([clarify(), reply()]))
    keys = "".join(
        f"    - {{user: {user}, org: acme, sha256: {hashlib.sha256(key.encode()).hexdigest()}}}\n"
        for user, key in KEYS.items()
    )
    (directory / "gateway.yaml").write_text(
        f"data_dir: {directory / 'data'}\n"
        "tags: {dir: orgs}\n"
        f"auth:\n  api_keys:\n{keys}"
        "engine: {planner: scripted, script: script.yaml, recover: false}\n"
    )
    command = [
        sys.executable,
        "-m",
        "gateway.cli",
        "serve",
        "--config",
        str(directory / "gateway.yaml"),
    ]
    with serving(command, clean_env()) as (_proc, port):
        base = f"http://127.0.0.1:{port}"
        bobs = [_post(base, "/sessions", {"message": "bob's"}, "bob")["id"] for _ in range(2)]
        yield {"base": base, "bobs": bobs}


@pytest.fixture(scope="module")
def api_schema(served: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_url(f"{served['base']}/openapi.json")


def _operations(api_schema: Any) -> list[Any]:
    return [result.ok() for result in api_schema.get_all_operations()]


def test_no_input_gets_a_5xx_or_an_answer_outside_the_document(
    api_schema: Any, served: dict[str, Any]
) -> None:
    # Each operation's cases drawn by hypothesis from the document (schemathesis's
    # strategies, driven here rather than by its pytest plugin, which this pytest lacks).
    operations = _operations(api_schema)
    assert len(operations) >= 9
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case: Any) -> None:
            _fuzzed(case, served)

        fuzz()


def _fuzzed(case: Any, served: dict[str, Any]) -> None:
    # As drawn (credentials too, which the document declares), then as alice.
    case.validate_response(case.call(timeout=10), checks=CHECKS)
    case.headers = {
        name: value
        for name, value in (case.headers or {}).items()
        if name.lower() not in ("authorization", "x-api-key")
    }
    response = case.call(headers=_headers("alice"), timeout=10)
    case.validate_response(response, checks=CHECKS)
    if "session_id" not in (case.path_parameters or {}):
        return
    # The same request on bob's session, and on an id nobody has: alike, to the byte.
    foreign = served["bobs"][0]
    unknown = "s_" + "u" * (len(foreign) - 2)
    answers = []
    for target in (foreign, unknown):
        case.path_parameters["session_id"] = target
        seen = case.call(headers=_headers("alice"), timeout=10)
        answers.append((seen.status_code, seen.text.replace(target, "ID")))
    assert answers[0] == answers[1], answers
    assert answers[0][0] in (400, 404), answers  # a malformed header may be refused first


def test_the_document_describes_every_endpoint(api_schema: Any) -> None:
    paths = {operation.path for operation in _operations(api_schema)}
    assert {"/sessions", "/sessions/{session_id}", "/events/{session_id}", "/tokens"} <= paths


def test_bobs_sessions_are_untouched(served: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{served['base']}/sessions/{served['bobs'][0]}", headers=_headers("bob")
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        view = json.loads(answer.read())
    assert view["status"] == "input_required"  # nothing alice sent reached it
