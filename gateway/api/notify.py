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
"""Notifications waiting or being sent, at most; past it, new ones are dropped (logged)."""
ORG_QUEUED: Final = 200
"""Of those, one org's at most: an org whose receiver is slow or down fills its own."""
AT_ONCE: Final = 16
"""Notifications being delivered at once."""
ORG_AT_ONCE: Final = 4
"""Of those, one org's at most: the others' go on past a slow receiver."""
TOLD: Final = frozenset({"input_required", *(state.value for state in FINAL)})

Notification = tuple[str, str, str, dict[str, Any]]
"""The org, the URL, the notification's id, and its body."""


class Notifier:
    def __init__(self, webhooks: Webhooks) -> None:
        self.webhooks = webhooks
        self._send: MemoryObjectSendStream[Notification] | None = None
        """Where notifications wait, while `run` runs (none are queued otherwise)."""
        self._pending: dict[str, int] = {}
        """Per org, notifications queued and not yet delivered (or given up)."""

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
        self.queue((org, session.callback, f"msg_{digest[:32]}", body))

    def queue(self, notification: Notification) -> bool:
        """Queue a notification for delivery; False (logged) when it was dropped: the
        gateway is stopping, or its org's share of the queue, or the queue, is full."""
        org, body = notification[0], notification[3]
        if self._send is None:
            logger.warning(
                "session %s: webhook not sent, the gateway is stopping", body["session_id"]
            )
            return False
        waiting = self._pending.get(org, 0)
        if waiting >= ORG_QUEUED or sum(self._pending.values()) >= QUEUED:
            logger.warning(
                "session %s: webhook dropped, %d of its org's wait", body["session_id"], waiting
            )
            return False
        self._pending[org] = waiting + 1
        self._send.send_nowait(notification)
        return True

    async def run(self) -> None:
        """Deliver what is queued, AT_ONCE at a time and ORG_AT_ONCE of an org's, until
        cancelled."""
        slots = anyio.Semaphore(AT_ONCE)
        lanes: dict[str, anyio.Semaphore] = {}
        send, receive = anyio.create_memory_object_stream[Notification](QUEUED)
        self._send = send
        try:
            async with anyio.create_task_group() as tasks, send, receive:
                async for notification in receive:  # each waits in its org's lane
                    lane = lanes.setdefault(notification[0], anyio.Semaphore(ORG_AT_ONCE))
                    tasks.start_soon(self._deliver, notification, lane, slots)
        finally:
            self._send = None
            self._pending.clear()

    async def _deliver(
        self, notification: Notification, lane: anyio.Semaphore, slots: anyio.Semaphore
    ) -> None:
        org, url, webhook_id, body = notification
        try:
            async with lane, slots:
                delivery = await self.webhooks.deliver(org, url, body, webhook_id=webhook_id)
            if delivery.ok:
                logger.info("session %s: told %s", body["session_id"], body["type"])
        except Exception:
            logger.exception("session %s: the webhook failed", body["session_id"])
        finally:
            left = self._pending.get(org, 1) - 1
            if left > 0:
                self._pending[org] = left
            else:
                self._pending.pop(org, None)
