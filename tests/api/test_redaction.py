"""A WebSocket's token never reaches the access log as it was sent."""

from __future__ import annotations

import logging

from gateway.api.redaction import TokenRedaction


def test_a_token_in_the_access_log_is_redacted() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "WebSocket %s" %d',
        ("127.0.0.1:5000", "/ws/s_1?since=1-0&token=abc.DEF_123&x=1", 101),
        None,
    )
    assert TokenRedaction().filter(record)
    text = record.getMessage()
    assert "abc.DEF_123" not in text
    assert "token=***&x=1" in text
    assert "since=1-0" in text
    plain = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, "GET /ws?token=t1", (), None
    )
    TokenRedaction().filter(plain)
    assert plain.getMessage() == "GET /ws?token=***"


def test_a_percent_encoded_token_key_is_redacted_too() -> None:
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, '"WebSocket %s"', ("/ws/s?%74oken=abc",), None
    )
    TokenRedaction().filter(record)
    assert "abc" not in record.getMessage()
