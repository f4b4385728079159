"""What an upstream sends, looked at before the SDK client reads it.

The SDK's client takes an upstream's messages whole or not at all, which lets one bad part
cost far more than itself:

- a `tools/list` page with one tool the SDK cannot validate (an `inputSchema` that is
  null, missing or not an object) is rejected whole: the upstream goes down with every
  valid tool, and reconnects in a loop. Here each such tool is left out with the reason,
  and so is a tool whose schema cannot be used safely (schemas.py);
- an answer nested too deeply to parse is dropped by the transport, and the call waits
  for its whole call_timeout. Here its request is answered at once with an error;
- a stdio upstream's junk lines are each logged by the SDK with a full traceback. Here
  each is one short line, at most one a second per upstream, with a count of the rest.

`guarded(transport, name)` wraps the transport's read stream; the wrapper costs one
function call per message, no task and no extra stream.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from types import TracebackType
from typing import Any, Self

import anyio
import mcp_types as types
import pydantic
from mcp.client import Transport
from mcp.shared.message import SessionMessage

from .schemas import LISTING_BYTES, problem, schema_text

logger = logging.getLogger("gateway.upstreams")

JUNK_LOG_INTERVAL = 1.0
"""Seconds between two log lines about one upstream's unreadable output."""


class _QuietParseErrors(logging.Filter):
    """Drops the SDK stdio transport's traceback per unreadable line: the guard logs it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to parse JSONRPC message")


logging.getLogger("mcp.client.stdio").addFilter(_QuietParseErrors())


class Listing:
    """What the guard keeps per upstream, across its sessions: what it left out of the
    upstream's listing, for the offer to report; the size of the schemas it let through
    (bounded: schemas.LISTING_BYTES); when it last reported unreadable output."""

    def __init__(self) -> None:
        self.dropped: list[str] = []
        self.schema_bytes = 0
        self.junk_logged_at = -JUNK_LOG_INTERVAL
        self.junk_unlogged = 0

    def clear(self) -> None:
        self.dropped.clear()
        self.schema_bytes = 0


@asynccontextmanager
async def guarded(transport: Transport, upstream: str, listing: Listing) -> AsyncIterator[Any]:
    async with transport as (read, write):
        yield _GuardedRead(read, upstream, listing), write


class _GuardedRead:
    def __init__(self, inner: Any, upstream: str, listing: Listing) -> None:
        self._inner = inner
        self._upstream = upstream
        self._listing = listing

    @property
    def last_context(self) -> Any:
        """The sender's context of the last message, where the transport keeps one (the SDK
        runs callbacks in it: see jsonrpc_dispatcher)."""
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        item = await self._inner.receive()
        if isinstance(item, SessionMessage):
            message = item.message
            if isinstance(message, types.JSONRPCResponse) and isinstance(
                message.result.get("tools"), list
            ):
                # Checking schemas can take seconds for a large hostile one: not on the
                # loop that serves every caller.
                listed = await anyio.to_thread.run_sync(self._listed, message)
                return replace(item, message=listed)
            return item
        return self._unreadable(item)

    def _listed(self, message: types.JSONRPCResponse) -> types.JSONRPCResponse:
        kept: list[Any] = []
        for raw in message.result["tools"]:
            name = raw.get("name") if isinstance(raw, dict) else None
            text = schema_text(raw.get("inputSchema")) if isinstance(raw, dict) else None
            why = _unusable(raw, text)
            if why is None:
                size = len(text or "")
                if self._listing.schema_bytes + size > LISTING_BYTES:
                    why = f"the listing's input schemas together exceed {LISTING_BYTES // 1024} KiB"
                else:
                    self._listing.schema_bytes += size
            if why is None:
                kept.append(raw)
                continue
            reason = f"upstream {self._upstream!r}: tool {name!r} left out: {why}"
            logger.warning("%s", reason)
            self._listing.dropped.append(reason)
        if len(kept) == len(message.result["tools"]):
            return message
        return message.model_copy(update={"result": {**message.result, "tools": kept}})

    def _unreadable(self, error: Exception) -> SessionMessage | Exception:
        """An answer that could be read far enough to know its request is answered with
        an error at once; anything else is logged (briefly) and passed on as it was."""
        text = _input_text(error)
        request_id = top_level_id(text) if text is not None else None
        if request_id is not None:
            logger.warning(
                "upstream %s: answer to request %r could not be read (%s)",
                self._upstream,
                request_id,
                _short(error),
            )
            failed = types.JSONRPCError(
                jsonrpc="2.0",
                id=request_id,
                error=types.ErrorData(
                    code=types.INTERNAL_ERROR,
                    message=f"upstream {self._upstream}'s answer could not be read: "
                    f"{_short(error)}",
                ),
            )
            return SessionMessage(failed)
        now = time.monotonic()
        listing = self._listing
        if now - listing.junk_logged_at >= JUNK_LOG_INTERVAL:
            more = (
                f" ({listing.junk_unlogged} more since the last report)"
                if listing.junk_unlogged
                else ""
            )
            logger.warning(
                "upstream %s sent output that is not JSON-RPC, ignored: %s%s",
                self._upstream,
                _short(error),
                more,
            )
            listing.junk_logged_at = now
            listing.junk_unlogged = 0
        else:
            listing.junk_unlogged += 1
        return error

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None


def _unusable(raw: Any, text: str | None) -> str | None:
    if not isinstance(raw, dict):
        return "it is not an object"
    if "inputSchema" not in raw:
        return "it has no inputSchema"
    try:
        types.Tool.model_validate(raw)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        if where != "inputSchema":
            return f"its definition is invalid ({where}: {first['msg']})"
    return problem(raw["inputSchema"], text)


def _input_text(error: Exception) -> str | None:
    """The text an SDK transport failed to parse, where its error keeps it (pydantic's)."""
    if isinstance(error, pydantic.ValidationError):
        for detail in error.errors():
            if isinstance(detail.get("input"), str):
                text: str = detail["input"]
                return text
    return None


def _short(error: Exception) -> str:
    if isinstance(error, pydantic.ValidationError):
        details = error.errors()
        if details:
            return str(details[0]["msg"])[:200]
    return (str(error).splitlines() or [type(error).__name__])[0][:200]


def top_level_id(text: str) -> int | str | None:
    """The `id` member of the JSON object `text` (which is too deep, or otherwise unfit, for
    a parser), found by scanning the top level only, in one pass; None when there is none
    or the text is no JSON object."""
    if not text.lstrip().startswith("{"):
        return None
    depth = 0
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char == '"':
            end = _string_end(text, index)
            if end < 0:
                return None
            if depth == 1 and text[index + 1 : end] == "id":
                rest = text[end + 1 :].lstrip()
                if rest.startswith(":"):
                    return _scalar(rest[1:].lstrip())
            index = end + 1
            continue
        if char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return None
        index += 1
    return None


def _string_end(text: str, start: int) -> int:
    """The index of the quote closing the string opened at `start`, or -1."""
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == '"':
            return index
        index += 1
    return -1


def _scalar(text: str) -> int | str | None:
    """A JSON-RPC id at the start of `text`: an integer or a string."""
    if text.startswith('"'):
        end = _string_end(text, 0)
        if end < 0:
            return None
        try:
            value = json.loads(text[: end + 1])
        except ValueError:
            return None
        return value if isinstance(value, str) else None
    digits = len(text) - len(text.lstrip("-0123456789"))
    if digits == 0:
        return None
    try:
        return int(text[:digits])
    except ValueError:
        return None
