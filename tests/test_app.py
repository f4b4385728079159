"""The app's answers that need no server: a route failing on the state store gets 503."""

from __future__ import annotations

import json

import pytest
from starlette.requests import Request

from gateway.app import state_unavailable
from gateway.state import StateUnavailable

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(("retry_after", "header"), [(0.2, "1"), (1.0, "1"), (2.3, "3")])
async def test_state_unavailable_is_a_503_with_retry_after(retry_after: float, header: str) -> None:
    request = Request({"type": "http", "method": "GET", "path": "/x", "headers": []})
    error = StateUnavailable("redis://:***@db:6379/0", "connection refused", retry_after)
    response = await state_unavailable(request, error)
    assert response.status_code == 503
    assert response.headers["retry-after"] == header
    body = json.loads(bytes(response.body))
    assert body == {"error": "state store unavailable; retry later"}
