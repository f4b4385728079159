"""What the conformance suite's 0.2 line asks of a server at 2026-07-28, beside the tools of
conformance.py (which serves these too): the input-required-result (MRTR, SEP-2322) tools and
prompt, and the stateless diagnostics of `server-stateless` (SEP-2575).

MRTR tools, each answering the suite's `input-required-result-*` scenario of the same name:
`test_input_required_result_elicitation`, `_sampling`, `_list_roots`, `_request_state`,
`_multiple_inputs`, `_multi_round`, `_tampered_state` and `_capabilities` (asks only for what
the request's client capabilities declare); the prompt `test_input_required_result_prompt`.
They ask with an `InputRequiredResult` and read the answers from the retry's
`inputResponses`; an answer missing is asked again. Every `requestState` they hand out is
HMAC-signed with a key of this process, so a tampered or forged one is refused (-32602).
They need the 2026-07-28 protocol: a handshake-era caller gets a tool error.

Diagnostics: `test_missing_capability` (needs sampling; a caller that did not declare it gets
-32021 with `requiredCapabilities`), `test_streaming_elicitation` (asks for elicitation: its
response stream carries no request of its own) and `test_logging_tool` (logs, which the SDK
sends only to a request that set a log level).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
from mcp import MCPError
from mcp.server import ServerRequestContext
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

ToolResult = types.CallToolResult | types.InputRequiredResult
ToolFunction = Callable[
    [ServerRequestContext, types.CallToolRequestParams, dict[str, Any]], Awaitable[ToolResult]
]
Answers = dict[str, types.InputResponse]

NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}}
PROMPT = "test_input_required_result_prompt"

_KEY = secrets.token_bytes(32)
"""Signs requestState: only this process can make one it will accept."""


def _text_result(text: str, *, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], is_error=is_error
    )


def _modern(ctx: ServerRequestContext) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def _declares(ctx: ServerRequestContext, capability: types.ClientCapabilities) -> bool:
    # In the 2026-07-28 era these are the request's own (_meta clientCapabilities).
    return ctx.session.check_client_capability(capability)


SAMPLING = types.ClientCapabilities(sampling=types.SamplingCapability())
ELICITATION = types.ClientCapabilities(elicitation=types.ElicitationCapability())


# --- requestState ------------------------------------------------------------------------


def sign(state: dict[str, Any]) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(state, sort_keys=True).encode()).decode()
    mac = hmac.new(_KEY, payload.encode(), hashlib.sha256).hexdigest()
    return f"{payload}.{mac}"


def verify(token: str | None, tool: str) -> dict[str, Any] | None:
    """The state `token` carries, None for none; MCPError if it is not one this process
    signed for `tool`."""
    if token is None:
        return None
    payload, _, mac = token.rpartition(".")
    good = hmac.new(_KEY, payload.encode(), hashlib.sha256).hexdigest()
    if not payload or not hmac.compare_digest(mac, good):
        raise MCPError(types.INVALID_PARAMS, "requestState failed its integrity check")
    state: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload))
    if state.get("tool") != tool:
        raise MCPError(types.INVALID_PARAMS, "requestState belongs to another request")
    return state


# --- the questions -----------------------------------------------------------------------


def _elicit(message: str, name: str, kind: str = "string") -> types.ElicitRequest:
    schema = {"type": "object", "properties": {name: {"type": kind}}, "required": [name]}
    return types.ElicitRequest(
        params=types.ElicitRequestFormParams(message=message, requested_schema=schema)
    )


def _sample(prompt: str, max_tokens: int) -> types.CreateMessageRequest:
    message = types.SamplingMessage(
        role="user", content=types.TextContent(type="text", text=prompt)
    )
    return types.CreateMessageRequest(
        params=types.CreateMessageRequestParams(messages=[message], max_tokens=max_tokens)
    )


ROOTS = types.ListRootsRequest()


def _ask(requests: types.InputRequests, tool: str, **state: Any) -> types.InputRequiredResult:
    return types.InputRequiredResult(
        input_requests=requests, request_state=sign({"tool": tool, **state})
    )


def _field(answers: Answers, key: str, field: str) -> Any:
    """An accepted elicitation answer's field, or None."""
    answer = answers.get(key)
    if isinstance(answer, types.ElicitResult) and answer.action == "accept":
        return (answer.content or {}).get(field)
    return None


def _said(answers: Answers, key: str) -> str | None:
    answer = answers.get(key)
    if not isinstance(answer, types.CreateMessageResult | types.CreateMessageResultWithTools):
        return None
    blocks = answer.content if isinstance(answer.content, list) else [answer.content]
    return " ".join(b.text for b in blocks if isinstance(b, types.TextContent))


def _roots(answers: Answers, key: str) -> list[str] | None:
    answer = answers.get(key)
    return [str(r.uri) for r in answer.roots] if isinstance(answer, types.ListRootsResult) else None


# --- the tools ---------------------------------------------------------------------------

Round = Callable[[str, Answers, dict[str, Any] | None], ToolResult]
"""One MRTR tool's logic: (its name, the answers so far, its verified state) -> result."""


def _mrtr(round_: Round) -> ToolFunction:
    async def tool(
        ctx: ServerRequestContext, params: types.CallToolRequestParams, _args: dict[str, Any]
    ) -> ToolResult:
        if not _modern(ctx):
            return _text_result(f"{params.name} needs the 2026-07-28 protocol", is_error=True)
        state = verify(params.request_state, params.name)
        return round_(params.name, dict(params.input_responses or {}), state)

    return tool


def elicitation(name: str, answers: Answers, _state: dict[str, Any] | None) -> ToolResult:
    who = _field(answers, "user_name", "name")
    if who is None:  # not answered (or answered under another key): ask again
        return _ask({"user_name": _elicit("What is your name?", "name")}, name)
    return _text_result(f"Hello, {who}!")


def sampling(name: str, answers: Answers, _state: dict[str, Any] | None) -> ToolResult:
    said = _said(answers, "capital_question")
    if said is None:
        return _ask({"capital_question": _sample("What is the capital of France?", 100)}, name)
    return _text_result(f"The model said: {said}")


def list_roots(name: str, answers: Answers, _state: dict[str, Any] | None) -> ToolResult:
    roots = _roots(answers, "client_roots")
    if roots is None:
        return _ask({"client_roots": ROOTS}, name)
    return _text_result(f"Roots: {', '.join(roots) or '(none)'}")


def request_state(name: str, answers: Answers, state: dict[str, Any] | None) -> ToolResult:
    ok = _field(answers, "confirm", "ok")
    if state is None or ok is None:
        return _ask({"confirm": _elicit("Please confirm", "ok", "boolean")}, name)
    return _text_result(f"state-ok: confirmed={ok}")


def multiple_inputs(name: str, answers: Answers, state: dict[str, Any] | None) -> ToolResult:
    who, said = _field(answers, "user_name", "name"), _said(answers, "greeting")
    roots = _roots(answers, "client_roots")
    if state is None or who is None or said is None or roots is None:
        questions: types.InputRequests = {
            "user_name": _elicit("What is your name?", "name"),
            "greeting": _sample("Generate a greeting", 50),
            "client_roots": ROOTS,
        }
        return _ask(questions, name)
    return _text_result(f"{said} {who} ({len(roots)} roots)")


def multi_round(name: str, answers: Answers, state: dict[str, Any] | None) -> ToolResult:
    who = (state or {}).get("name") or _field(answers, "step1", "name")
    if who is None:
        return _ask({"step1": _elicit("Step 1: What is your name?", "name")}, name, round=1)
    color = _field(answers, "step2", "color")
    if color is None:
        question: types.InputRequests = {
            "step2": _elicit("Step 2: What is your favorite color?", "color")
        }
        return _ask(question, name, round=2, name=who)
    return _text_result(f"{who} likes {color}")


def tampered_state(name: str, answers: Answers, state: dict[str, Any] | None) -> ToolResult:
    # verify() already refused a state this process did not sign.
    ok = _field(answers, "confirm", "ok")
    if state is None or ok is None:
        return _ask({"confirm": _elicit("Please confirm", "ok", "boolean")}, name)
    return _text_result(f"state verified: confirmed={ok}")


async def capabilities(
    ctx: ServerRequestContext, params: types.CallToolRequestParams, _args: dict[str, Any]
) -> ToolResult:
    """Asks only what the request's client declared it can answer."""
    if not _modern(ctx):
        return _text_result(f"{params.name} needs the 2026-07-28 protocol", is_error=True)
    answers = dict(params.input_responses or {})
    questions: types.InputRequests = {}
    if _declares(ctx, SAMPLING) and _said(answers, "summary") is None:
        questions["summary"] = _sample("Summarize the request", 50)
    if _declares(ctx, ELICITATION) and _field(answers, "user_name", "name") is None:
        questions["user_name"] = _elicit("What is your name?", "name")
    if questions:
        return _ask(questions, params.name)
    return _text_result("Nothing (more) to ask that the client can answer")


# --- the stateless diagnostics -----------------------------------------------------------


async def missing_capability(
    ctx: ServerRequestContext, params: types.CallToolRequestParams, _args: dict[str, Any]
) -> ToolResult:
    if not _declares(ctx, SAMPLING):
        data = types.MissingRequiredClientCapabilityErrorData(required_capabilities=SAMPLING)
        raise MCPError(
            types.MISSING_REQUIRED_CLIENT_CAPABILITY,
            "test_missing_capability needs the sampling capability",
            data.model_dump(by_alias=True, mode="json", exclude_none=True),
        )
    if _modern(ctx) and _said(dict(params.input_responses or {}), "sampling") is None:
        return _ask({"sampling": _sample("Say something", 20)}, params.name)
    return _text_result("The client can sample")


async def streaming_elicitation(
    ctx: ServerRequestContext, params: types.CallToolRequestParams, _args: dict[str, Any]
) -> ToolResult:
    # At 2026-07-28 the question is the response (an InputRequiredResult), never a request
    # of the server's own on the response stream.
    if not _modern(ctx):
        return _text_result(f"{params.name} needs the 2026-07-28 protocol", is_error=True)
    who = _field(dict(params.input_responses or {}), "user_name", "name")
    if who is None:
        return _ask({"user_name": _elicit("What is your name?", "name")}, params.name)
    return _text_result(f"Streamed for {who}")


async def logging_tool(
    ctx: ServerRequestContext, _params: types.CallToolRequestParams, _args: dict[str, Any]
) -> ToolResult:
    for message in ("Tool execution started", "Tool execution completed"):
        with warnings.catch_warnings():  # deprecated in 2026-07-28, still how tools log
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            sending = ctx.session.send_log_message(
                "info", message, logger="conformance", related_request_id=ctx.request_id
            )
        await sending
    return _text_result("Logged twice (to a request that asked for logs)")


def _tool(name: str, description: str) -> types.Tool:
    return types.Tool(name=name, description=description, input_schema=NO_ARGUMENTS)


TOOLS: list[tuple[types.Tool, ToolFunction]] = [
    (_tool("test_input_required_result_elicitation", "Asks your name (MRTR)"), _mrtr(elicitation)),
    (_tool("test_input_required_result_sampling", "Asks the model (MRTR)"), _mrtr(sampling)),
    (_tool("test_input_required_result_list_roots", "Asks your roots (MRTR)"), _mrtr(list_roots)),
    (
        _tool("test_input_required_result_request_state", "Asks with a requestState (MRTR)"),
        _mrtr(request_state),
    ),
    (
        _tool("test_input_required_result_multiple_inputs", "Asks three questions at once"),
        _mrtr(multiple_inputs),
    ),
    (
        _tool("test_input_required_result_multi_round", "Asks in two rounds (MRTR)"),
        _mrtr(multi_round),
    ),
    (
        _tool("test_input_required_result_tampered_state", "Refuses a tampered requestState"),
        _mrtr(tampered_state),
    ),
    (
        _tool("test_input_required_result_capabilities", "Asks only what the client declared"),
        capabilities,
    ),
    (_tool("test_missing_capability", "Needs the sampling capability"), missing_capability),
    (_tool("test_streaming_elicitation", "Asks for elicitation (MRTR)"), streaming_elicitation),
    (_tool("test_logging_tool", "Logs two messages"), logging_tool),
]

PROMPT_ENTRY = types.Prompt(name=PROMPT, description="A prompt that asks for its context (MRTR)")


def get_prompt(
    ctx: ServerRequestContext, params: types.GetPromptRequestParams
) -> types.GetPromptResult | types.InputRequiredResult:
    """prompts/get of PROMPT: asks for the context first."""
    if not _modern(ctx):
        raise MCPError(types.INVALID_PARAMS, f"{PROMPT} needs the 2026-07-28 protocol")
    verify(params.request_state, PROMPT)
    context = _field(dict(params.input_responses or {}), "user_context", "context")
    if context is None:
        question = _elicit("What context should the prompt use?", "context")
        return _ask({"user_context": question}, PROMPT)
    text = types.TextContent(type="text", text=f"Use this context: {context}")
    return types.GetPromptResult(
        description=PROMPT_ENTRY.description,
        messages=[types.PromptMessage(role="user", content=text)],
    )
