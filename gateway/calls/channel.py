"""What a tool call may do besides returning, as the door that made it allows.

A door builds one `CallChannel` per call: the MCP front from what the caller's request
asked for (a progress token, a log level) and what its session can take (questions), the
engine from its session's event stream. Cancellation needs no field: cancelling the task
that awaits the call cancels it, upstream included (the SDK sends notifications/cancelled,
an exchange closes its request).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final, get_args

import mcp_types as types

from ..upstreams.relay import Asker, LogCallback, ProgressCallback
from ..upstreams.requests import InputRound

LEVELS: Final[tuple[types.LoggingLevel, ...]] = get_args(types.LoggingLevel)
"""RFC 5424 severities, least severe first, as the SDK orders them."""
_RANK: Final = {level: rank for rank, level in enumerate(LEVELS)}


@dataclass(frozen=True, slots=True)
class CallChannel:
    progress: ProgressCallback | None = None
    """Gets the upstream's progress reports; None: the caller asked for none."""
    log: LogCallback | None = None
    """Gets the upstream's log messages at `log_level` and above."""
    log_level: types.LoggingLevel | None = None
    """None: no log messages (a 2026-07-28 request that did not ask for them)."""
    asker: Asker | None = None
    """Puts an upstream's questions (sampling, elicitation) to the caller during the call;
    None: they are answered with an error."""
    input_round: InputRound | None = None
    """A 2026-07-28 caller, which answers questions by calling again: an upstream's
    InputRequiredResult comes back as the call's result, and these are the answers of the
    round before."""
    owner: Hashable | None = None
    """Whose call this is, as far as an upstream's messages go (a client session, a
    request, an engine session): calls of different owners never share an upstream
    session that cannot tell them apart. None: the call is its own."""

    def relayed_log(self) -> LogCallback | None:
        """`log`, passing only messages at `log_level` and above; None when none pass."""
        log, level = self.log, self.log_level
        if log is None or level is None:
            return None
        if level == "debug":
            return log
        least = _RANK[level]

        async def relay(message: types.LoggingMessageNotificationParams) -> None:
            if _RANK.get(message.level, len(LEVELS)) >= least:
                await log(message)

        return relay


NO_CHANNEL: Final = CallChannel()
"""A call that only returns: no progress, logs or questions reach anyone."""
