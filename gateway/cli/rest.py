"""The client of a running gateway's session API (REST), for the `--url` commands
(remote.py): where the gateway is (`--url`), the caller its API key names (`--api-key`,
or $GATEWAY_API_KEY; none: a gateway that lets loopback callers in without one), and
what a refused request says and exits with.

Each request has its timeouts, and one whose connection is refused (it was never sent)
is tried again twice. A request that fails is ApiFailure: the gateway's JSON error
(`status`, `code`, `detail`), or no answer at all.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import httpx2

from .common import UsageError
from .serve import API_KEY_ENV

EXIT_API: Final = 4
"""The gateway could not be reached, or refused a request (its `detail` on stderr)."""

REQUEST_TIMEOUT: Final = httpx2.Timeout(10.0, connect=5.0)
CANCEL_TIMEOUT: Final = httpx2.Timeout(5.0, connect=3.0)
CONNECT_TRIES: Final = 3
"""Attempts at a request whose connection is refused or times out (it was never sent,
so trying again cannot do it twice)."""
TRANSIENT: Final = frozenset({429, 502, 503, 504})
"""Statuses worth trying again (as is no answer at all)."""


class ApiFailure(Exception):
    """A request that failed: the gateway's refusal (`status`, `code`, `detail` as its
    JSON error says) or no answer at all (`status` None)."""

    def __init__(self, detail: str, status: int | None = None, code: str = "") -> None:
        super().__init__(detail)
        self.detail, self.status, self.code = detail, status, code

    @property
    def transient(self) -> bool:
        return self.status is None or self.status in TRANSIENT

    def __str__(self) -> str:
        if self.status is None:
            return self.detail
        return f"{self.status} {self.code}: {self.detail}" if self.code else self.detail


class Client:
    """The session API of the gateway at `base`, as the caller `key` names."""

    def __init__(
        self, base: str, key: str | None, transport: httpx2.BaseTransport | None = None
    ) -> None:
        """`transport`: for tests (the default one honours the *_PROXY variables)."""
        headers = {"Accept": "application/json", "User-Agent": "gateway-cli"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.http = httpx2.Client(
            base_url=base,
            headers=headers,
            timeout=REQUEST_TIMEOUT,
            follow_redirects=False,
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        timeout: httpx2.Timeout = REQUEST_TIMEOUT,
    ) -> dict[str, Any]:
        """The JSON object the gateway answers, or ApiFailure."""
        for attempt in range(CONNECT_TRIES):
            try:
                answer = self.http.request(method, path, json=body, params=params, timeout=timeout)
                break
            except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
                if attempt == CONNECT_TRIES - 1:
                    raise ApiFailure(f"cannot connect to {self.http.base_url}: {exc}") from None
                time.sleep(0.25 * 2**attempt)
            except httpx2.TimeoutException:
                raise ApiFailure(f"{method} {path}: no answer in time") from None
            except httpx2.HTTPError as exc:
                raise ApiFailure(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        try:
            data = answer.json()
        except ValueError:
            data = None
        if answer.is_success and isinstance(data, dict):
            return data
        if isinstance(data, dict) and isinstance(data.get("detail"), str):
            raise ApiFailure(data["detail"], answer.status_code, str(data.get("error", "")))
        what = "an answer that is not a JSON object" if answer.is_success else answer.reason_phrase
        raise ApiFailure(f"{method} {path}: {what}", answer.status_code, "")


def base_url(url: str) -> str:
    """The gateway's base URL from --url (its /mcp URL will do too)."""
    base = url.strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise UsageError(f"--url must be an http:// or https:// URL, not {url!r}")
    return base.removesuffix("/mcp")


def api_key(args: argparse.Namespace) -> str | None:
    key: str | None = args.api_key or os.environ.get(API_KEY_ENV)
    return key


@contextmanager
def connect(args: argparse.Namespace) -> Iterator[Client]:
    """A Client for --url and the caller's key, closed after."""
    client = Client(base_url(args.url), api_key(args))
    try:
        yield client
    finally:
        client.close()


def refused(command: str, exc: ApiFailure) -> int:
    """Say why `gateway {command}` failed (and how to give a key, on 401): EXIT_API."""
    print(f"gateway {command}: {exc}", file=sys.stderr)
    if exc.status == 401:
        hint = f"give the caller's key with --api-key or ${API_KEY_ENV}"
        print(f"gateway {command}: {hint}", file=sys.stderr)
    return EXIT_API
