"""Reading what a client sends: a JSON body of bounded size checked against its model,
and the refusals (ApiError) as JSON answers. A client gets a 4xx that says what is
wrong, never a 500."""

from __future__ import annotations

from typing import Final, TypeVar

from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from .. import jsoncodec
from ..errors import ApiError
from .models import Body, Problem

MAX_BODY: Final = 256 * 1024
"""Bytes of a request body, at most: the longest message and a flow's inputs fit."""

B = TypeVar("B", bound=Body)


def problem(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        Problem(error=code, detail=detail).model_dump(), status_code=status, headers=headers
    )


async def refused(_request: Request, exc: Exception) -> JSONResponse:
    """The app's handler of ApiError."""
    assert isinstance(exc, ApiError)
    return problem(exc.status, exc.code, exc.detail, exc.headers)


async def read_body(request: Request, model: type[B], optional: bool = False) -> B:
    """The request's body as `model`: 415 when it is not JSON, 413 past MAX_BODY, 400 when
    it does not parse, 422 when it does not fit (the fields named). `optional`: an empty
    body is the model's defaults."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise ApiError(413, "body_too_large", f"the body is larger than {MAX_BODY} bytes")
    raw = bytearray()
    try:
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                raise ApiError(413, "body_too_large", f"the body is larger than {MAX_BODY} bytes")
    except ClientDisconnect:
        raise ApiError(400, "invalid_body", "the client went away before its body ended") from None
    if not raw and optional:
        return model()
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(415, "unsupported_media_type", "the body must be application/json")
    try:
        data = jsoncodec.loads(bytes(raw))
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_body", "the body must be a JSON object")
    unfit = jsoncodec.unencodable(data, "the body")
    if unfit is not None:  # what the state store could not keep
        raise ApiError(422, "invalid_body", unfit)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, "invalid_body", describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """The first few problems, each with the field it is in."""
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error["loc"]) or "the body"
        parts.append(f"{where}: {error['msg']}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
