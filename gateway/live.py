"""The requests open now, each with the credential it came with, so that a credential
revoked or expired ends them, streams included: on /mcp as on the session API's SSE and
WebSocket. A JWT's request ends at the token's expiry too."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import anyio

from .auth import Authenticator, Credential
from .errors import Unauthenticated

logger = logging.getLogger("gateway")

Vouched = Callable[[Authenticator], bool]
"""Whether the credential still identifies the same principal under new auth settings."""


def still(caller: Credential) -> Vouched:
    """The check for a credential the caller presented itself (an API key or a JWT)."""

    def vouched(authenticator: Authenticator) -> bool:
        if caller.kind not in ("api_key", "jwt"):
            return True  # loopback and local callers have no credential to revoke
        try:
            return authenticator.check(caller.secret).principal == caller.principal
        except Unauthenticated:
            return False

    return vouched


class OpenRequests:
    def __init__(self, name: str) -> None:
        """`name`: what they are, for the log (`MCP requests`, `session streams`)."""
        self.name = name
        self._open: dict[int, tuple[Vouched, anyio.CancelScope]] = {}

    def __len__(self) -> int:
        return len(self._open)

    @contextmanager
    def open(
        self, caller: Credential, scope: anyio.CancelScope, vouched: Vouched | None = None
    ) -> Iterator[None]:
        """Hold `scope` (the request's) open while the body runs: cancelled when `caller`
        is revoked (`recheck`), or by its expiry. `vouched`: how to check it again, when
        not by the secret it was presented with (a WebSocket's single-use token)."""
        if caller.expires_at is not None:
            scope.deadline = min(
                scope.deadline, anyio.current_time() + caller.expires_at - time.time()
            )
        key = id(scope)
        self._open[key] = (vouched or still(caller), scope)
        try:
            yield
        finally:
            del self._open[key]

    def recheck(self, authenticator: Authenticator) -> int:
        """End the requests whose credential no longer identifies the same principal under
        `authenticator`. Returns how many were ended."""
        ended = 0
        for vouched, scope in list(self._open.values()):
            if not vouched(authenticator):
                scope.cancel()
                ended += 1
        if ended:
            logger.warning("ended %d open %s whose credentials were revoked", ended, self.name)
        return ended
