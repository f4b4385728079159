"""`tools/call` to a 2026-07-28 streamable-HTTP upstream as one hand-built POST.

In that revision a call is a self-contained exchange: one POST, no session, answered with
JSON or, when the upstream has something to say during the call (progress, logs), with an
SSE stream ending in the response. The SDK `Client` costs the gateway about three times the
CPU of the exchange itself on this leg (bench/README.md, "front"), so calls to such an
upstream are sent here, on a kept-alive aiohttp connection pool. Everything else (connecting,
`server/discover`, listings, subscriptions, resources, prompts) stays with the SDK `Client`,
which also stays the fallback for what this path does not do: a handshake-era caller whose
call the upstream answers with `input_required` is handed to the SDK client, which asks the
caller (sampling, elicitation) and calls again.

What the SDK client would do and this path does too: the `_meta` envelope (protocol
version, client info, capabilities, progress token, log level), the routing headers
(`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`, `Mcp-Param-*` from the tool's
`x-mcp-header` annotations), an upstream's JSON-RPC error as `MCPError`, a lost connection
as `CONNECTION_CLOSED` (so the connection's breaker and reconnect see it), and cancellation
by closing the POST.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import httpx2
import mcp_types as types
from aiohttp.helpers import get_env_proxy_for_url
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    encode_header_value,
    mcp_param_headers,
    x_mcp_header_map,
)
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    LOG_LEVEL_META_KEY,
    PROTOCOL_VERSION_META_KEY,
)
from pydantic import TypeAdapter, ValidationError
from yarl import URL

from .. import jsoncodec
from ..identitycache import IdentityCache
from .config import IDEMPOTENCY_META
from .guard import top_level_id
from .relay import LogCallback, ProgressCallback
from .status import describe

logger = logging.getLogger("gateway.upstreams")

_RESPONSES: TypeAdapter[types.InputResponses] = TypeAdapter(types.InputResponses)

ASKED = ("sampling", "elicitation")
"""The capabilities whose questions go to the caller, when a caller answers them."""

KEEPALIVE = 4.0
"""Seconds an idle connection is kept: below uvicorn's 5 s, so that the upstream never
closes one just as a call is sent on it."""


class NeedsClient(Exception):
    """The upstream asked for input that only the SDK client can obtain for this caller."""


class ExchangeLost(Exception):
    """The exchange broke off (reset, cut off mid-answer, a broken stream): whether the
    call took effect upstream is unknown. The upstream's SDK session is not concerned."""


class ExchangeUnsent(Exception):
    """No connection to the upstream could be made, twice: the request never left, so
    the call did not take effect."""


class Exchange:
    """Calls to one upstream, for as long as its SDK session lasts (`aclose` after)."""

    def __init__(
        self,
        upstream: str,
        url: str,
        headers: Mapping[str, str],
        protocol_version: str,
        client_info: types.Implementation,
        capabilities: types.ClientCapabilities,
    ) -> None:
        self.upstream = upstream
        self._url = url
        self._capabilities: dict[str, Any] = capabilities.model_dump(
            by_alias=True, mode="json", exclude_none=True
        )
        self._envelope = {
            PROTOCOL_VERSION_META_KEY: protocol_version,
            CLIENT_INFO_META_KEY: client_info.model_dump(by_alias=True, mode="json"),
            CLIENT_CAPABILITIES_META_KEY: capabilities.model_dump(
                by_alias=True, mode="json", exclude_none=True
            ),
        }
        self._headers = {
            **headers,
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            MCP_PROTOCOL_VERSION_HEADER: protocol_version,
            MCP_METHOD_HEADER: "tools/call",
        }
        self._ids = itertools.count(1)
        self._header_maps: IdentityCache[dict[str, Any], dict[tuple[str, ...], str]] = (
            IdentityCache()
        )
        """`x-mcp-header` annotations per input schema."""
        self._session: aiohttp.ClientSession | None = None
        self._proxy: URL | None = None
        self._proxy_auth: aiohttp.BasicAuth | None = None

    def _capabilities_for(self, asks: types.ClientCapabilities | None) -> dict[str, Any]:
        own = self._capabilities
        declared = asks.model_dump(by_alias=True, mode="json", exclude_none=True) if asks else {}
        kept = {key: value for key, value in own.items() if key not in ASKED}
        kept.update((key, declared[key]) for key in ASKED if key in declared)
        return kept

    def _http(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running loop, as aiohttp wants.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE),
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),  # the connection's cap covers it
                skip_auto_headers=("User-Agent",),
            )
            # A proxy from the environment, as httpx2 takes one for the SDK client: read
            # once here (aiohttp's trust_env reads it, and ~/.netrc, on every request).
            with contextlib.suppress(LookupError):  # none for this URL
                self._proxy, self._proxy_auth = get_env_proxy_for_url(URL(self._url))
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call_tool(
        self,
        tool: types.Tool,
        arguments: dict[str, Any],
        *,
        on_progress: ProgressCallback | None = None,
        on_log: LogCallback | None = None,
        log_level: types.LoggingLevel = "info",
        input_round: tuple[types.InputResponses | None, str | None] | None = None,
        asks: types.ClientCapabilities | None = None,
        idempotency_key: str | None = None,
    ) -> types.CallToolResult | types.InputRequiredResult:
        """Call `tool` (the upstream's own definition) once. Raises MCPError for an error
        answer (or an answer that is not one), ExchangeLost when the exchange broke off,
        ExchangeUnsent when it could not be sent, and NeedsClient when the upstream asks
        for input and there is no `input_round` to pass the question back in. With
        `input_round`, the upstream's questions go to the caller, so the upstream is told
        of the caller's sampling and elicitation (`asks`), not the gateway's."""
        request_id = next(self._ids)
        meta: dict[str, Any] = dict(self._envelope)
        if input_round is not None:
            meta[CLIENT_CAPABILITIES_META_KEY] = self._capabilities_for(asks)
        if on_progress is not None:
            meta["progressToken"] = request_id
        if on_log is not None:
            meta[LOG_LEVEL_META_KEY] = log_level
        if idempotency_key is not None:
            meta[IDEMPOTENCY_META] = idempotency_key
        params: dict[str, Any] = {"name": tool.name, "arguments": arguments, "_meta": meta}
        if input_round is not None:
            responses, state = input_round
            if responses is not None:
                params["inputResponses"] = _RESPONSES.dump_python(
                    responses, by_alias=True, mode="json", exclude_none=True
                )
            if state is not None:
                params["requestState"] = state
        body = jsoncodec.dumps(
            {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
        )
        headers = dict(self._headers)
        headers[MCP_NAME_HEADER] = encode_header_value(tool.name)
        header_map = self._header_maps.get(tool.input_schema, x_mcp_header_map)
        if header_map:
            headers.update(mcp_param_headers(header_map, arguments))
        for attempt in (1, 2):
            try:
                # No redirects: the SDK client follows none to another origin, and the
                # configured headers (credentials) must not go to one.
                http = self._http()
                async with http.post(
                    self._url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    proxy=self._proxy,
                    proxy_auth=self._proxy_auth,
                ) as response:
                    answer = await self._answer(response, request_id, on_progress, on_log)
                break
            except aiohttp.ClientConnectorError as exc:
                if attempt == 2:  # never sent: tried once more on a fresh connection
                    raise ExchangeUnsent(describe(exc)) from exc
            except (aiohttp.ClientError, httpx2.TransportError) as exc:
                raise ExchangeLost(describe(exc)) from exc
        try:
            if "error" in answer:
                raise MCPError.from_error_data(types.ErrorData.model_validate(answer["error"]))
            result = answer.get("result")
            if not isinstance(result, dict):
                raise MCPError(types.INTERNAL_ERROR, "the upstream's answer has no result")
            if result.get("resultType") == "input_required":
                if input_round is None:
                    raise NeedsClient(tool.name)
                return types.InputRequiredResult.model_validate(result)
            return types.CallToolResult.model_validate(result)
        except ValidationError as exc:
            raise MCPError(
                types.INTERNAL_ERROR,
                f"the upstream's answer is not a valid tools/call answer: {exc.errors()[0]['msg']}",
            ) from None

    async def _answer(
        self,
        response: aiohttp.ClientResponse,
        request_id: int,
        on_progress: ProgressCallback | None,
        on_log: LogCallback | None,
    ) -> dict[str, Any]:
        kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind == "text/event-stream" and response.status == 200:
            async for message in _events(response):
                if message.get("id") == request_id and ("result" in message or "error" in message):
                    return message
                await _relay(message, on_progress, on_log)
            raise MCPError(
                types.CONNECTION_CLOSED, "the upstream ended the stream before answering"
            )
        body = await response.read()
        if kind == "application/json":
            try:
                parsed: Any = jsoncodec.loads(body)
            except (ValueError, RecursionError) as exc:
                if top_level_id(body.decode(errors="replace")) is None:
                    parsed = None  # not an answer at all: said below as the SDK says it
                else:
                    why = f"the upstream's answer could not be read ({type(exc).__name__})"
                    raise MCPError(types.INTERNAL_ERROR, why) from None
            # A JSON-RPC error may come with a 4xx status (400, 404): it is the answer.
            if isinstance(parsed, dict) and ("result" in parsed or "error" in parsed):
                if parsed.get("id") not in (request_id, None):
                    raise MCPError(types.INTERNAL_ERROR, "the upstream answered another request")
                return parsed
        # What the SDK client says of a bare HTTP error.
        raise MCPError(types.INTERNAL_ERROR, "Server returned an error response")


async def _events(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The JSON-RPC messages of an SSE answer, parsed by httpx2's SSE decoder (fed the
    aiohttp body), so that the framing rules are a library's, not ours."""
    stream = httpx2.Response(
        200,
        headers={"content-type": "text/event-stream"},
        stream=_Body(response),
        request=httpx2.Request(response.method, str(response.url)),
    )
    async for event in httpx2.EventSource(stream):
        if event.event not in ("", "message") or not event.data:
            continue
        try:
            message = jsoncodec.loads(event.data)
        except (ValueError, RecursionError) as exc:
            answered = top_level_id(event.data)
            if answered is None:
                logger.warning("dropped an SSE event that is not JSON: %.200s", event.data)
                continue
            # An answer too deep (or otherwise unfit) to parse: the call fails now, rather
            # than waiting for an answer that has come.
            why = f"the upstream's answer could not be read ({type(exc).__name__})"
            message = {"id": answered, "error": {"code": types.INTERNAL_ERROR, "message": why}}
        if isinstance(message, dict):
            yield message


class _Body(httpx2.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_any():
            yield chunk


async def _relay(
    message: dict[str, Any], on_progress: ProgressCallback | None, on_log: LogCallback | None
) -> None:
    method, params = message.get("method"), message.get("params")
    if not isinstance(params, dict):
        return
    try:
        if method == "notifications/progress" and on_progress is not None:
            note = types.ProgressNotificationParams.model_validate(params)
            await on_progress(note.progress, note.total, note.message)
        elif method == "notifications/message" and on_log is not None:
            await on_log(types.LoggingMessageNotificationParams.model_validate(params))
        else:
            logger.debug("dropped %s sent during a call", method)
    except ValidationError:  # as the SDK client does: a bad notification is not the call's end
        logger.debug("dropped a malformed %s", method)


CAPABILITIES = types.ClientCapabilities(
    sampling=types.SamplingCapability(),
    elicitation=types.ElicitationCapability(
        form=types.FormElicitationCapability(), url=types.UrlElicitationCapability()
    ),
)
"""What the SDK client declares for the gateway, which answers sampling and elicitation."""
