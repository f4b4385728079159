"""The call service: what a tool call is, the same for every door (the MCP front, the
envelope engine, the session API). See service.py."""

from .channel import NO_CHANNEL, CallChannel
from .outcome import CallRecord, Completed, Failed, Outcome, Refused, ToolCall
from .service import Mode, OutcomeHook, ToolService

__all__ = [
    "NO_CHANNEL",
    "CallChannel",
    "CallRecord",
    "Completed",
    "Failed",
    "Mode",
    "Outcome",
    "OutcomeHook",
    "Refused",
    "ToolCall",
    "ToolService",
]
