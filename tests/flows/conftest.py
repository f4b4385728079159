from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.engine.helpers import Bench
from tests.flows.helpers import running_ops


@pytest.fixture
async def bench() -> AsyncIterator[Bench]:
    async with running_ops() as bench:
        yield bench
