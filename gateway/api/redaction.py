"""What the access log may not keep: a WebSocket's token, which rides in its URL (a
browser cannot send it as a header). It works once, for a minute, but a log lives longer
and is read by more people than the gateway's callers."""

from __future__ import annotations

import logging
import re
from typing import Final

TOKEN: Final = re.compile(r"([?&]token=)[^&\s\"]+")
ACCESS_LOGGER: Final = "uvicorn.access"


class TokenRedaction(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(arg, str) and "token=" in arg for arg in record.args
        ):
            record.args = tuple(
                TOKEN.sub(r"\1***", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        elif isinstance(record.msg, str) and "token=" in record.msg:
            record.msg = TOKEN.sub(r"\1***", record.msg)
        return True


def redact_access_log() -> None:
    """Install the filter on uvicorn's access log, once per process."""
    access = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(each, TokenRedaction) for each in access.filters):
        access.addFilter(TokenRedaction())
