"""Request content checked before it goes to an upstream.

What JSON cannot carry (text that is not valid Unicode, a number that is not finite, a
value of another type) must never reach an upstream leg: the SDK client writes a request
in a task of the upstream's shared session, and a lone surrogate in one caller's
arguments made that task fail, which ended the session for every caller and counted as
the upstream's failure (five such calls opened its breaker). So such a request is refused
here, before anything is sent: the caller's invalid input (-32602), counting nothing.
"""

from __future__ import annotations

from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError

from .. import jsoncodec


class Unsendable(MCPError):
    """A request refused before it was sent: its content cannot be written as JSON."""

    def __init__(self, what: str, problem: str) -> None:
        super().__init__(types.INVALID_PARAMS, f"{what} not sent: {problem}")


def sendable(what: str, **content: Any) -> None:
    """Raise Unsendable when a part of `content` (named as the request names it) cannot
    be written as JSON; `what` names the request."""
    for name, part in content.items():  # each part's depth is its own
        problem = jsoncodec.unencodable(part, name)
        if problem is not None:
            raise Unsendable(what, problem)
