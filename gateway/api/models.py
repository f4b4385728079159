"""What the session API reads and answers, as pydantic models: the request bodies are
checked against them (unknown fields refused, nothing coerced), the answers are made from
them, and /openapi.json is generated from both, so the document cannot drift from what
the endpoints do."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..engine.envelopes import MAX_TEXT

Status = Literal[
    "submitted", "working", "input_required", "completed", "failed", "canceled", "rejected"
]
"""The A2A task states, as the engine's sessions have them."""

SessionId = Annotated[str, Field(min_length=1, max_length=100)]


class Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class NewSession(Body):
    message: Annotated[str, Field(max_length=MAX_TEXT)] | None = None
    """What to do; optional with a flow."""
    intent: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    """The task's intent: which of the caller's tags apply."""
    flow: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    """Run this flow tag of the caller's, step by step, instead of planning with a model."""
    inputs: dict[str, Any] | None = None
    """With flow: the flow's input, as its inputs schema says."""
    callback_url: Annotated[str, Field(min_length=1, max_length=2_000)] | None = None
    """POSTed a signed notification on every question, approval request and end."""


class Interaction(Body):
    message: Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
    """The answer to the session's question."""
    question: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    """The question answered: the session's `last_event` when it was read asking it
    (the id of the `state` event that moved it to input_required). A stale one, meant for
    a question answered since, is refused (409) instead of answering a newer one."""


class Decision(Body):
    decision: Literal["approve", "reject", "edit"]
    message: Annotated[str, Field(max_length=MAX_TEXT)] = ""
    """With reject: why, told to the model."""
    arguments: dict[str, dict[str, Any]] | None = None
    """With edit: the arguments to use instead, by the held call's index ("0", "1", ...)."""


class Cancel(Body):
    mode: Literal["immediate", "after_step"] = "immediate"
    """immediate: stop now, calls in flight too; after_step: start nothing new, let what
    runs finish."""


class TokenRequest(Body):
    session_id: SessionId | None = None
    """The one session the token opens a WebSocket on; none: `/ws`, which starts one, or
    any session of the caller's (a widget reconnecting to the session it started)."""


# --- answers ---------------------------------------------------------------------------


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(Answer):
    error: str
    """A code for programs: unauthorized, not_found, invalid_body, not_waiting, ..."""
    detail: str
    """What is wrong, for a person."""


class Links(Answer):
    self: str
    events: str
    ws: str
    interact: str
    cancel: str


class Created(Answer):
    id: str
    status: Status
    links: Links


class Accepted(Answer):
    id: str
    status: Status


class Call(Answer):
    key: str
    tool: str
    decision: str
    """allowed, or why it was refused (not_granted, denied, out_of_scope, ...)."""
    ok: bool


class EnvelopeSeen(Answer):
    kind: str
    confidence: float | None
    event: str
    """The id of its event on the session's stream."""


class HeldCall(Answer):
    model_config = ConfigDict(extra="allow")
    tool: str
    arguments: dict[str, Any] = {}
    why: str = ""


class Approval(Answer):
    id: str
    """What POST /sessions/{id}/approvals/{approval} names."""
    calls: list[HeldCall]


class SessionView(Answer):
    id: str
    status: Status
    waiting: Literal["question", "confidence", "approval"] | None
    question: str | None
    approval: Approval | None
    reply: str | None
    error: str | None
    """Why it failed, was rejected, or was cancelled."""
    intent: str | None
    flow: str | None
    message: str
    created: float
    """Unix time."""
    updated: float
    """Unix time of its last event."""
    calls: list[Call]
    envelopes: list[EnvelopeSeen]
    confidence: list[float]
    """Each envelope's confidence, in order."""
    spent: dict[str, int | float]
    budgets: dict[str, int | float | None]
    last_event: str


class SessionSummary(Answer):
    id: str
    status: Status
    message: str
    created: float
    updated: float


class SessionList(Answer):
    sessions: list[SessionSummary]
    next: str | None
    """The cursor of the next page (`cursor=`), none after the last."""


class Token(Answer):
    token: str
    expires_in: float
    """Seconds; it works once."""
