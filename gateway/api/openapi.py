"""`GET /openapi.json`: the session API described from the models its endpoints read and
answer with (models.py), so that what is documented is what is checked and sent."""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .. import __version__
from .models import (
    Accepted,
    Cancel,
    Created,
    Decision,
    Interaction,
    NewSession,
    Problem,
    SessionList,
    SessionView,
    Token,
    TokenRequest,
)

REF: Final = "#/components/schemas/{model}"
SESSION_ID: Final = {
    "name": "session_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 100},
}
PROBLEMS: Final = {
    "400": "Malformed: not JSON, or a bad query or header",
    "401": "No valid credential",
    "413": "The body is too large",
    "415": "The body is not application/json",
    "421": "The Host is not one this gateway answers",
    "422": "The body does not fit",
    "503": "The state store is unavailable; retry later",
}


def _ref(model: type[Any]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type[Any]) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(model)}}


def _responses(ok: str, model: type[Any] | None, *statuses: str) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    if model is not None:
        answers[ok] = {"description": "Done", "content": _json(model)}
    for status in ("400", "401", *statuses, "421", "503"):
        answers[status] = {"description": _describe(status), "content": _json(Problem)}
    return answers


def _describe(status: str) -> str:
    return (
        PROBLEMS.get(status)
        or {
            "404": "No such session of yours (also when it is another caller's)",
            "409": "The session is not waiting for this (it works, or has ended)",
        }[status]
    )


def _body(model: type[Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": _json(model)}


def document() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        NewSession,
        Interaction,
        Decision,
        Cancel,
        TokenRequest,
        Created,
        Accepted,
        SessionView,
        SessionList,
        Token,
        Problem,
    ]
    _, schemas = models_json_schema(
        [(model, "validation" if _is_body(model) else "serialization") for model in models],
        ref_template=REF,
    )
    body = ("413", "415", "422")
    security: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
    paths: dict[str, Any] = {
        "/sessions": {
            "post": {
                "operationId": "createSession",
                "summary": "Start an agent session (it runs in the background)",
                "requestBody": _body(NewSession),
                "responses": _responses("201", Created, *body),
            },
            "get": {
                "operationId": "listSessions",
                "summary": "Your sessions, newest first",
                "parameters": [
                    {"name": "status", "in": "query", "schema": _status_schema(schemas)},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                    },
                    {"name": "cursor", "in": "query", "schema": {"type": "number"}},
                ],
                "responses": _responses("200", SessionList),
            },
        },
        "/sessions/{session_id}": {
            "get": {
                "operationId": "getSession",
                "summary": "A session: status, envelopes, calls, spending, result",
                "parameters": [SESSION_ID],
                "responses": _responses("200", SessionView, "404"),
            }
        },
        "/sessions/{session_id}/interact": {
            "post": {
                "operationId": "answerSession",
                "summary": "Answer the session's question",
                "parameters": [SESSION_ID],
                "requestBody": _body(Interaction),
                "responses": _responses("202", Accepted, "404", "409", *body),
            }
        },
        "/sessions/{session_id}/approvals/{approval}": {
            "post": {
                "operationId": "decideApproval",
                "summary": "Approve, reject or edit the calls the session holds",
                "parameters": [
                    SESSION_ID,
                    {
                        "name": "approval",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 100},
                    },
                ],
                "requestBody": _body(Decision),
                "responses": _responses("202", Accepted, "404", "409", *body),
            }
        },
        "/sessions/{session_id}/cancel": {
            "post": {
                "operationId": "cancelSession",
                "summary": "Cancel the session: immediate, or after the step under way",
                "parameters": [SESSION_ID],
                "requestBody": _body(Cancel, required=False),
                "responses": _responses("202", Accepted, "404", "409", *body),
            }
        },
        "/events/{session_id}": {
            "get": {
                "operationId": "followSession",
                "summary": "The session's events as Server-Sent Events",
                "description": "The first frame of every connection is a snapshot; "
                "Last-Event-ID resumes after that event; a gap frame tells of lost "
                "events; the stream ends after the session's final state.",
                "parameters": [
                    SESSION_ID,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "schema": {"type": "string", "pattern": "^[0-9]+(-[0-9]+)?$"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_responses("200", None, "404"),
                },
            }
        },
        "/tokens": {
            "post": {
                "operationId": "createToken",
                "summary": "A single-use token for a WebSocket (/ws or /ws/{session_id})",
                "requestBody": _body(TokenRequest, required=False),
                "responses": _responses("201", Token, "404", *body),
            }
        },
    }
    for operations in paths.values():
        for operation in operations.values():
            operation["security"] = security
    paths["/healthz"] = {
        "get": {
            "operationId": "health",
            "summary": "The process is up",
            "security": [],
            "responses": {"200": {"description": "Up"}},
        }
    }
    paths["/readyz"] = {
        "get": {
            "operationId": "ready",
            "summary": "It can serve: the state store answers (upstreams reported)",
            "security": [],
            "responses": {"200": {"description": "Ready"}, "503": {"description": "Not"}},
        }
    }
    for path, summary, kind in (
        ("/metrics", "Prometheus metrics (text exposition)", "text/plain"),
        ("/openapi.json", "This document", "application/json"),
        ("/", "The web page", "text/html"),
        ("/widget.js", "The embeddable widget", "text/javascript"),
    ):
        paths[path] = {
            "get": {
                "operationId": _operation_id(path),
                "summary": summary,
                "security": [],
                "responses": {
                    "200": {"description": summary, "content": {kind: {"schema": {}}}},
                    **({} if path == "/metrics" else {"421": {"description": _describe("421")}}),
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "MCP tag gateway: session API",
            "version": __version__,
            "description": "Agent sessions over REST and Server-Sent Events; the same "
            "events over WebSocket at /ws/{session_id} (see the README).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


def _operation_id(path: str) -> str:
    return {"/metrics": "metrics", "/openapi.json": "openapi", "/": "page"}.get(path, "widget")


def _is_body(model: type[Any]) -> bool:
    return model in (NewSession, Interaction, Decision, Cancel, TokenRequest)


def _status_schema(schemas: dict[str, Any]) -> dict[str, Any]:
    status = schemas["$defs"]["SessionSummary"]["properties"]["status"]
    return dict(status)
