"""Fixtures of the front's tests: one gateway per module for the tests that change
nothing in it (a gateway with its upstreams takes a second or two to start)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.front.harness import Gateway, running_gateway


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    async with running_gateway(tmp_path_factory.mktemp("gateway")) as running:
        yield running
