"""What the access log may not keep: a WebSocket's token, which rides in its URL (a
browser cannot send it as a header). It works once, for a minute, but a log lives longer
and is read by more people than the gateway's callers."""

from __future__ import annotations

import logging
import re
from typing import Final
from urllib.parse import unquote

TOKEN: Final = re.compile(r"([?&]token=)[^&\s\"]+")
LOGGERS: Final = ("uvicorn.access", "uvicorn.error")
"""uvicorn's access log, and its error log, where it tells of each WebSocket upgrade."""


def _redacted(text: str) -> str:
    if "token=" in text:
        return TOKEN.sub(r"\1***", text)
    if "?" in text and "token=" in unquote(text).lower():  # the key percent-encoded: all of it
        return text.split("?", 1)[0] + "?***"
    return text


class TokenRedaction(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _redacted(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        if isinstance(record.msg, str):
            record.msg = _redacted(record.msg)
        return True


def redact_access_log() -> None:
    """Install the filter on uvicorn's logs, once per process."""
    for name in LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(each, TokenRedaction) for each in log.filters):
            log.addFilter(TokenRedaction())
