"""A session as its caller sees it over the API: its snapshot, with what its event stream
tells besides (each envelope and its confidence, when it last moved)."""

from __future__ import annotations

from typing import Any, Final

from ..engine.budgets import Budgets
from ..state.base import START, StateStore, Stream, parse_id
from .models import Approval, Call, EnvelopeSeen, HeldCall, SessionSummary, SessionView

EVENTS_READ: Final = 1_000
"""Events read in one round trip when a view is made."""
EVENTS_VIEWED: Final = 10_000
"""Events a view reads at most (a stream holds as many, at its default length)."""
ENDED: Final = {"failed", "canceled", "rejected"}


def owned(snapshot: dict[str, Any] | None, user: str, org: str) -> bool:
    """Whether the snapshot is a session of this caller's: one of another user, or of
    another org, is as unknown to it as one that does not exist."""
    return snapshot is not None and snapshot.get("user") == user and snapshot.get("org") == org


def updated(snapshot: dict[str, Any]) -> float:
    """When the session last moved: its last event's time (a stream id's milliseconds)."""
    last = snapshot.get("last_event") or START
    return parse_id(last)[0] / 1000 if last != START else float(snapshot["created"])


def summary(snapshot: dict[str, Any]) -> SessionSummary:
    return SessionSummary(
        id=snapshot["id"],
        status=snapshot["state"],
        message=snapshot["message"],
        created=snapshot["created"],
        updated=updated(snapshot),
    )


async def session_view(
    store: StateStore, snapshot: dict[str, Any], budgets: Budgets
) -> SessionView:
    """The view of the stored session; `budgets`: what it may spend (today's tags)."""
    envelopes: list[EnvelopeSeen] = []
    after, read = START, 0
    while read < EVENTS_VIEWED:
        batch = await store.read(snapshot["id"], Stream.EVENTS, after, EVENTS_READ)
        for event in batch.events:
            if event.data.get("type") == "envelope":
                confidence = event.data.get("confidence")
                envelopes.append(
                    EnvelopeSeen(
                        kind=str(event.data.get("kind")),
                        confidence=confidence if isinstance(confidence, int | float) else None,
                        event=event.id,
                    )
                )
        read += len(batch.events)
        if batch.last_id is None or len(batch.events) < EVENTS_READ:
            break
        after = batch.last_id
    state, waiting, outcome = snapshot["state"], snapshot.get("waiting"), snapshot["outcome"]
    asking = state == "input_required"
    approval = snapshot.get("approval") if asking and waiting == "approval" else None
    flow = snapshot.get("flow")
    return SessionView(
        id=snapshot["id"],
        status=state,
        waiting=waiting if asking else None,
        question=outcome if asking else None,
        approval=None
        if approval is None
        else Approval(
            id=snapshot["last_event"],
            calls=[HeldCall.model_validate(call) for call in approval.get("calls", [])],
        ),
        reply=outcome if state == "completed" else None,
        error=outcome if state in ENDED else None,
        intent=snapshot.get("intent"),
        flow=flow["name"] if isinstance(flow, dict) else None,
        message=snapshot["message"],
        created=snapshot["created"],
        updated=updated(snapshot),
        calls=[Call.model_validate(call) for call in snapshot["calls"]],
        envelopes=envelopes,
        confidence=[seen.confidence for seen in envelopes if seen.confidence is not None],
        spent=snapshot["spent"],
        budgets=budgets.model_dump(),
        last_event=snapshot.get("last_event") or START,
    )
