"""Who is calling: credentials → Principal, for every door that serves callers.

Two kinds of credential, both sent on every request:
- API keys, in `Authorization: Bearer <key>` or `X-API-Key: <key>`. gateway.yaml stores
  their sha256 (`gateway keys hash` prints it); a plain `key:` is accepted only in a config
  marked `auth.dev: true`.
- JWT bearer tokens (HS256 with a shared secret, RS256 with a public key file), checked for
  signature, expiry and audience; the user, org and roles come from configurable claims.

`auth.loopback_principal` (dev configs only) maps a caller that presents no credential and
connects from a loopback address to one fixed principal. It exists for clients that cannot
send a header at all (the conformance suite); never set it on a shared gateway.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import jwt
from pydantic import Field, model_validator

from .errors import ConfigError, ConfigIssue, Unauthenticated
from .principal import Principal
from .strict import Strict

SHA256_HEX = r"^[0-9a-f]{64}$"
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"


Names = Annotated[tuple[Annotated[str, Field(pattern=NAME)], ...], Field(strict=False)]


class ApiKeySettings(Strict):
    user: Annotated[str, Field(pattern=NAME)]
    org: Annotated[str, Field(pattern=NAME)]
    roles: Names = ()
    """Empty: the user's roles in the org file apply."""
    sha256: Annotated[str, Field(pattern=SHA256_HEX)] | None = None
    """The key's sha256, in lowercase hex."""
    key: Annotated[str, Field(min_length=16)] | None = None
    """The key itself: only in a config marked `auth.dev: true`."""
    label: str | None = None
    """Names the key in the audit log (default: the first 8 hex digits of its hash)."""

    @model_validator(mode="after")
    def _one_form(self) -> ApiKeySettings:
        if (self.sha256 is None) == (self.key is None):
            raise ValueError("give exactly one of sha256 (the key's hash) or key")
        return self

    @property
    def digest(self) -> str:
        return self.sha256 if self.sha256 is not None else key_digest(self.key or "")


class JwtSettings(Strict):
    algorithm: Literal["HS256", "RS256"]
    secret_env: str | None = None
    """HS256: the environment variable that holds the shared secret."""
    public_key_file: str | None = None
    """RS256: a PEM public key, relative to gateway.yaml."""
    audience: Annotated[str, Field(min_length=1)]
    """Tokens must name this audience (`aud`)."""
    issuer: str | None = None
    """When set, tokens must come from this issuer (`iss`)."""
    user_claim: str = "sub"
    org_claim: str = "org"
    roles_claim: str = "roles"
    leeway: Annotated[float, Field(ge=0, le=300, strict=False)] = 0
    """Seconds of clock skew allowed on `exp` and `nbf`."""
    revoked: Annotated[tuple[str, ...], Field(strict=False)] = ()
    """Token ids (`jti`) that no longer work, before they expire."""

    @model_validator(mode="after")
    def _key_for_algorithm(self) -> JwtSettings:
        if self.algorithm == "HS256" and not self.secret_env:
            raise ValueError("HS256 needs secret_env: the variable holding the shared secret")
        if self.algorithm == "RS256" and not self.public_key_file:
            raise ValueError("RS256 needs public_key_file: a PEM public key")
        return self


class LoopbackPrincipal(Strict):
    user: Annotated[str, Field(pattern=NAME)]
    org: Annotated[str, Field(pattern=NAME)]
    roles: Names = ()


class AuthSettings(Strict):
    dev: bool = False
    """A development config: plain keys, loopback_principal and `gateway stdio --user`
    (a caller named without a credential) are allowed."""
    api_keys: Annotated[tuple[ApiKeySettings, ...], Field(strict=False)] = ()
    jwt: JwtSettings | None = None
    loopback_principal: LoopbackPrincipal | None = None
    """Test-only: a credential-less caller on a loopback address is this principal."""

    @model_validator(mode="after")
    def _dev_only(self) -> AuthSettings:
        if self.dev:
            return self
        if any(k.key is not None for k in self.api_keys):
            raise ValueError(
                "a plain `key:` is allowed only with dev: true; store its sha256 instead "
                "(gateway keys hash)"
            )
        if self.loopback_principal is not None:
            raise ValueError("loopback_principal is allowed only with dev: true")
        return self


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Credential:
    """An authenticated caller and what vouched for it."""

    principal: Principal
    kind: Literal["api_key", "jwt", "loopback", "local"]
    label: str
    """Safe to log: a key's label or hash prefix, a token's jti or subject."""
    secret: str = ""
    """What the caller presented (to re-check it when the config changes); never logged."""
    expires_at: float | None = None
    """Unix time after which it stops working (a JWT's exp)."""
    token_id: str | None = None
    """A JWT's `jti`, when it has one."""

    @property
    def owner(self) -> str:
        """The identity MCP sessions are bound to: the principal, not the key."""
        roles = ",".join(self.principal.roles)
        return f"{self.principal.org_id}/{self.principal.user_id}/{roles}"


_BEARER = re.compile(r"^Bearer\s+(\S+)\s*$", re.IGNORECASE)


class Authenticator:
    """Checks credentials against one version of the `auth:` settings. Replace it (do not
    mutate it) when the settings change."""

    def __init__(self, settings: AuthSettings, base_dir: Path, display: str = "gateway.yaml"):
        self.settings = settings
        self._keys: dict[str, ApiKeySettings] = {k.digest: k for k in settings.api_keys}
        self._jwt_key: Any = None
        self.jwt_fingerprint: str | None = None
        """Names the JWT settings and key in force (a digest), so that a stream opened by a
        token a JWT minted ends when they change (a key rotated after a compromise)."""
        if settings.jwt is not None:
            self._jwt_key = _jwt_key(settings.jwt, base_dir, display)
            key = self._jwt_key
            material = key if isinstance(key, str) else repr(key.public_numbers())
            self.jwt_fingerprint = hashlib.sha256(
                f"{settings.jwt.model_dump_json()}\n{material}".encode()
            ).hexdigest()

    @property
    def enabled(self) -> bool:
        """Whether any credential can work at all."""
        s = self.settings
        return bool(self._keys) or s.jwt is not None or s.loopback_principal is not None

    def authenticate(self, headers: Mapping[str, str], client_host: str | None) -> Credential:
        """The caller of a request with these (lower-case) headers. Raises Unauthenticated."""
        presented = headers.get("x-api-key")
        authorization = headers.get("authorization")
        if presented is None and authorization is not None:
            match = _BEARER.match(authorization)
            if match is None:
                raise Unauthenticated("the Authorization header must be 'Bearer <credential>'")
            presented = match.group(1)
        if presented is None:
            loopback = self.settings.loopback_principal
            if loopback is not None and _is_loopback(client_host):
                principal = Principal(loopback.user, loopback.org, loopback.roles)
                return Credential(principal, "loopback", "loopback")
            raise Unauthenticated("credentials required", error="")
        return self.check(presented)

    def check(self, presented: str) -> Credential:
        key = self._keys.get(key_digest(presented))
        if key is not None:
            label = key.label or f"key:{key.digest[:8]}"
            principal = Principal(key.user, key.org, key.roles)
            return Credential(principal, "api_key", label, presented)
        if self.settings.jwt is not None and presented.count(".") == 2:
            return self._check_jwt(presented, self.settings.jwt)
        raise Unauthenticated("the credential is not valid")

    def key_principal(self, digest: str) -> Principal | None:
        """Who the API key with this sha256 is now (None: no such key): what a stream
        opened with a token minted by that key is checked against when keys change."""
        key = self._keys.get(digest)
        return None if key is None else Principal(key.user, key.org, key.roles)

    def jwt_still_valid(self, jti: object, fingerprint: object) -> bool:
        """Whether JWTs are still checked as they were (`fingerprint`, jwt_fingerprint's
        then) and this token id is not revoked (its expiry is the stream's deadline)."""
        settings = self.settings.jwt
        if settings is None or fingerprint != self.jwt_fingerprint:
            return False
        return not (isinstance(jti, str) and jti in settings.revoked)

    def _check_jwt(self, token: str, settings: JwtSettings) -> Credential:
        try:
            claims = jwt.decode(
                token,
                self._jwt_key,
                algorithms=[settings.algorithm],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway,
                options={"require": ["exp", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("the token is not for this audience") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("the token is not valid") from None
        jti = claims.get("jti")
        if isinstance(jti, str) and jti in settings.revoked:
            raise Unauthenticated("the token has been revoked")
        user, org = claims.get(settings.user_claim), claims.get(settings.org_claim)
        if not isinstance(user, str) or not user or not isinstance(org, str) or not org:
            raise Unauthenticated(
                f"the token lacks the {settings.user_claim!r} or {settings.org_claim!r} claim"
            )
        roles_claim = claims.get(settings.roles_claim, [])
        if isinstance(roles_claim, str):
            roles_claim = roles_claim.split()
        if not isinstance(roles_claim, list) or not all(isinstance(r, str) for r in roles_claim):
            raise Unauthenticated(f"the token's {settings.roles_claim!r} claim is not a list")
        label = f"jwt:{jti}" if isinstance(jti, str) else f"jwt:{user}"
        principal = Principal(user, org, tuple(roles_claim))
        token_id = jti if isinstance(jti, str) else None
        return Credential(principal, "jwt", label, token, float(claims["exp"]), token_id)


def _jwt_key(settings: JwtSettings, base_dir: Path, display: str) -> Any:
    if settings.algorithm == "HS256":
        name = settings.secret_env or ""
        secret = os.environ.get(name)
        if not secret:
            raise ConfigError(
                [
                    ConfigIssue(
                        display,
                        f"environment variable {name} (the HS256 secret) is not set",
                        field="auth.jwt.secret_env",
                    )
                ]
            )
        if len(secret.encode()) < 32:
            raise ConfigError(
                [
                    ConfigIssue(
                        display,
                        f"the HS256 secret in {name} is shorter than 32 bytes",
                        field="auth.jwt.secret_env",
                    )
                ]
            )
        return secret
    path = base_dir / (settings.public_key_file or "")
    try:
        # Parsed now, so that a wrong file fails at start-up, not at the first caller.
        return jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).prepare_key(
            path.read_bytes()
        )
    except (OSError, ValueError, jwt.InvalidKeyError) as exc:
        raise ConfigError(
            [
                ConfigIssue(
                    display,
                    f"cannot read the RS256 public key {path}: {exc}",
                    field="auth.jwt.public_key_file",
                )
            ]
        ) from None


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
