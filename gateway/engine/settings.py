"""gateway.yaml's `engine` section: which planner decides, what a session may spend, and
how sure the model must be. Read without the planners' SDKs (the Anthropic SDK is
imported only when its planner is built)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..strict import Strict
from .budgets import Budgets


class Prices(Strict):
    """US dollars per million tokens, for the session's cost budget."""

    input: Annotated[float, Field(ge=0, strict=False)] = 0.0
    output: Annotated[float, Field(ge=0, strict=False)] = 0.0
    cache_read: Annotated[float, Field(ge=0, strict=False)] = 0.0
    cache_write: Annotated[float, Field(ge=0, strict=False)] = 0.0


class AnthropicSettings(Strict):
    model: Annotated[str, Field(min_length=1)] = "claude-sonnet-5-5"
    max_tokens: Annotated[int, Field(ge=1, le=64_000)] = 4_096
    timeout: Annotated[float, Field(gt=0, strict=False)] = 60.0
    """Seconds per request (the SDK's)."""
    max_retries: Annotated[int, Field(ge=0, le=10)] = 2
    """The SDK's retries of 408, 409, 429, 5xx and connection errors."""
    api_key_env: Annotated[str, Field(min_length=1)] = "ANTHROPIC_API_KEY"
    base_url: str | None = None
    """None: the SDK's default, or ANTHROPIC_BASE_URL when set."""
    prices: Prices = Prices()


class EngineSettings(Strict):
    planner: Literal["auto", "anthropic", "scripted", "sampling", "none"] = "auto"
    """auto: anthropic when its API key is in the environment, else none (a session then
    fails at once, saying how to configure one). sampling: the caller's own model, asked
    by `sampling/createMessage` (handshake-era callers that declared sampling only; MCP
    2026-07-28 deprecates it), at most `anthropic.max_tokens` per turn."""
    script: str | None = None
    """The scripted planner's YAML list of envelopes, relative to gateway.yaml."""
    anthropic: AnthropicSettings = AnthropicSettings()
    budgets: Budgets = Budgets()
    confidence: Annotated[float, Field(ge=0, le=1, strict=False)] = 0.5
    """Below this, an envelope that calls tools is not acted on: the caller is asked."""
    after_taint: Literal["ask", "refuse"] = "ask"
    """A call only taint holds (see engine/integrity.py): ask the user, or refuse it."""
    lease: Annotated[float, Field(ge=1, le=600, strict=False)] = 15.0
    """Seconds a replica's claim on a session it runs lasts unrenewed (renewed every quarter
    of it): after a crash, how soon another replica may take the session over."""
    recover: bool = True
    """Resume, on this replica, sessions whose engine stopped while they ran (recovery.py):
    runs silent on the run queue for a lease, asked for twice a lease."""
    nested_depth: Annotated[int, Field(ge=0, le=5)] = 0
    """How deep sessions may start sessions (a session calling run_session): 0, not at all."""
    taint_definitions: bool = False
    """Treat the tool definitions a session is shown (descriptions, schemas: the upstreams'
    text) as untrusted data that taints it from the start, unless the caller's tags trust
    every shown tool's output: then no call runs without a plan committed before, a
    read-only tool or the user's approval. Off: only results taint."""
