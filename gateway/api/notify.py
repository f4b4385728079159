"""Telling a session's caller at its `callback_url` when the session asks something (a
question, an approval) or ends: told by the engine's events (Recorder.on_event) on the
replica that wrote them, delivered in the background by webhooks.py, signed, retried.

A notification's id is derived from the session and the event, so a receiver drops a
duplicate however it came (a retry, or the same event told again after a resume). One
whose replica dies before it is delivered is lost: the caller learns the outcome from
GET /sessions/{id}, which is the record; webhooks are the nudge.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from typing import Any, Final

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from ..engine.session import Session
from ..engine.states import FINAL
from .webhooks import Webhooks

logger = logging.getLogger("gateway.api")

QUEUED: Final = 1_000
"""Notifications waiting to be sent, at most; past it, new ones are dropped (logged)."""
AT_ONCE: Final = 16
"""Notifications being delivered at once."""
TOLD: Final = frozenset({"input_required", *(state.value for state in FINAL)})

Notification = tuple[str, str, str, dict[str, Any]]
"""The org, the URL, the notification's id, and its body."""


class Notifier:
    def __init__(self, webhooks: Webhooks) -> None:
        self.webhooks = webhooks
        self._send: MemoryObjectSendStream[Notification] | None = None
        """Where notifications wait, while `run` runs (none are queued otherwise)."""

    def on_event(self, session: Session, type_: str, fields: Mapping[str, Any]) -> None:
        """The engine's event hook: queue a notification for a move it tells of."""
        if session.callback is None or type_ != "state" or fields.get("to") not in TOLD:
            return
        status = str(fields["to"])
        body: dict[str, Any] = {
            "type": f"session.{status}",
            "session_id": session.id,
            "status": status,
            "event_id": session.last_event,
            "at": time.time(),
        }
        if status == "input_required":
            body["waiting"] = session.waiting
            body["question"] = session.outcome
            if session.waiting == "approval" and session.approval is not None:
                body["approval"] = {
                    "id": session.last_event,
                    "calls": [
                        {"tool": call.get("tool"), "why": call.get("why")}
                        for call in session.approval.get("calls", [])
                    ],
                }
        elif status == "completed":
            body["reply"] = session.outcome
        else:
            body["error"] = session.outcome
        digest = hashlib.sha256(f"{session.id}:{session.last_event}".encode()).hexdigest()
        org = session.caller.principal.org_id
        if self._send is None:
            logger.warning("session %s: webhook not sent, the gateway is stopping", session.id)
            return
        try:
            self._send.send_nowait((org, session.callback, f"msg_{digest[:32]}", body))
        except anyio.WouldBlock:
            logger.warning("session %s: webhook dropped, %d are waiting", session.id, QUEUED)

    async def run(self) -> None:
        """Deliver what is queued, AT_ONCE at a time, until cancelled."""
        slots = anyio.Semaphore(AT_ONCE)
        send, receive = anyio.create_memory_object_stream[Notification](QUEUED)
        self._send = send
        try:
            async with anyio.create_task_group() as tasks, send, receive:
                async for notification in receive:
                    await slots.acquire()
                    tasks.start_soon(self._deliver, notification, slots)
        finally:
            self._send = None

    async def _deliver(self, notification: Notification, slots: anyio.Semaphore) -> None:
        org, url, webhook_id, body = notification
        try:
            delivery = await self.webhooks.deliver(org, url, body, webhook_id=webhook_id)
            if delivery.ok:
                logger.info("session %s: told %s", body["session_id"], body["type"])
        except Exception:
            logger.exception("session %s: the webhook failed", body["session_id"])
        finally:
            slots.release()
