"""The Host and Origin allow-lists' patterns: `name:*` is the name on a port, nothing else."""

from __future__ import annotations

import pytest

from gateway.api.hosts import listed

PATTERNS = ("127.0.0.1:*", "localhost", "http://localhost:*")


@pytest.mark.parametrize(
    "value", ["127.0.0.1:8080", "localhost", "http://localhost:3000", "127.0.0.1:1"]
)
def test_listed(value: str) -> None:
    assert listed(value, PATTERNS)


@pytest.mark.parametrize(
    "value",
    [
        "localhost:evil",
        "http://localhost:1.evil.com",
        "http://localhost:80@evil.com",
        "127.0.0.1:",
        "127.0.0.1:123456",
        "127.0.0.1:\uff11",  # a full-width digit
        "evil.example",
        "http://localhost",
    ],
)
def test_not_listed(value: str) -> None:
    assert not listed(value, PATTERNS)
