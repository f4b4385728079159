"""gateway.yaml's `api:` section: the session API's streams."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ..strict import Strict
from .webhooks import WebhookSettings


class ApiSettings(Strict):
    widget_origins: Annotated[tuple[str, ...], Field(strict=False)] = ()
    """Origins of the pages that embed the widget (`https://shop.example`, or
    `https://name:*` for any port): a WebSocket upgrade from any other Origin, besides
    the gateway's own and server.allowed_origins, is refused before it is accepted."""
    keepalive: Annotated[float, Field(gt=0, le=300, strict=False)] = 15
    """Seconds between keep-alive comments on an idle SSE stream (pings on a WebSocket)."""
    send_timeout: Annotated[float, Field(gt=0, le=300, strict=False)] = 10
    """A stream whose client has not taken a frame for this long (its buffers are full:
    it reads too slowly) is closed, so that it holds nothing of the gateway's."""
    start_timeout: Annotated[float, Field(gt=0, le=300, strict=False)] = 30
    """Seconds a WebSocket opened to start a session may take to send its `start`."""
    webhooks: WebhookSettings = WebhookSettings()
    """Signed notifications to a session's callback_url, per org (gateway/api/webhooks.py)."""
