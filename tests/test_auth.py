"""Credentials → principals: API keys, JWT (HS256 and RS256), and the settings' errors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.auth import Authenticator, AuthSettings, key_digest
from gateway.errors import ConfigError, Unauthenticated
from gateway.principal import Principal
from gateway.settings import load_config

SECRET = "s" * 40
KEY = "alice-key-0123456789abcdef"


def authenticator(tmp_path: Path, **settings: Any) -> Authenticator:
    return Authenticator(AuthSettings.model_validate(settings, strict=False), tmp_path)


def hs256(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **jwt_settings: Any) -> Authenticator:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    jwt_config = {"algorithm": "HS256", "secret_env": "JWT_SECRET", "audience": "gw"}
    return authenticator(tmp_path, jwt={**jwt_config, **jwt_settings})


def token(key: Any = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    base = {"sub": "alice", "org": "acme", "aud": "gw", "exp": time.time() + 60}
    return jwt.encode({**base, **claims}, key, algorithm=algorithm)


def test_an_api_key_maps_to_its_principal_by_header(tmp_path: Path) -> None:
    auth = authenticator(
        tmp_path, api_keys=[{"user": "alice", "org": "acme", "sha256": key_digest(KEY)}]
    )
    for headers in ({"authorization": f"Bearer {KEY}"}, {"x-api-key": KEY}):
        caller = auth.authenticate(headers, "10.0.0.1")
        assert caller.principal == Principal("alice", "acme")
        assert caller.label == f"key:{key_digest(KEY)[:8]}"
        assert KEY not in caller.owner


def test_no_credential_and_a_wrong_one_are_refused_differently(tmp_path: Path) -> None:
    auth = authenticator(tmp_path, api_keys=[{"user": "a", "org": "o", "sha256": "0" * 64}])
    with pytest.raises(Unauthenticated) as missing:
        auth.authenticate({}, "127.0.0.1")
    assert missing.value.challenge() == 'Bearer realm="mcp-gateway"'
    with pytest.raises(Unauthenticated) as wrong:
        auth.authenticate({"x-api-key": "nope"}, "127.0.0.1")
    assert 'error="invalid_token"' in wrong.value.challenge()


def test_hs256_token_claims_make_the_principal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = hs256(tmp_path, monkeypatch, org_claim="tenant", roles_claim="groups")
    caller = auth.check(token(tenant="globex", org=None, groups=["ops", "admin"], jti="t1"))
    assert caller.principal == Principal("alice", "globex", ("ops", "admin"))
    assert (caller.kind, caller.label) == ("jwt", "jwt:t1")
    assert caller.expires_at is not None


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": time.time() - 10}, "the token has expired"),
        ({"aud": "someone-else"}, "the token is not for this audience"),
        ({"exp": None}, "the token is not valid"),
        ({"org": None}, "lacks the 'sub' or 'org' claim"),
        ({"roles": "not a list"}, None),
        ({"roles": [1]}, "'roles' claim is not a list"),
        ({"jti": "revoked-1"}, "the token has been revoked"),
    ],
)
def test_bad_tokens_are_refused_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, claims: dict[str, Any], reason: str | None
) -> None:
    auth = hs256(tmp_path, monkeypatch, revoked=["revoked-1"])
    base = {"sub": "alice", "org": "acme", "aud": "gw", "exp": time.time() + 60}
    payload = {k: v for k, v in {**base, **claims}.items() if v is not None}
    presented = jwt.encode(payload, SECRET, algorithm="HS256")
    if reason is None:  # a space-separated string of roles is accepted, as OAuth scopes are
        assert auth.check(presented).principal.roles == ("not", "a", "list")
        return
    with pytest.raises(Unauthenticated, match=reason):
        auth.check(presented)


def test_a_token_signed_with_another_secret_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = hs256(tmp_path, monkeypatch)
    with pytest.raises(Unauthenticated, match="the token is not valid"):
        auth.check(token(key="x" * 40))


def test_rs256_verifies_with_the_public_key_file(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "jwt.pem").write_bytes(pem)
    auth = authenticator(
        tmp_path,
        jwt={"algorithm": "RS256", "public_key_file": "jwt.pem", "audience": "gw", "issuer": "idp"},
    )
    assert auth.check(token(private, "RS256", iss="idp")).principal == Principal("alice", "acme")
    with pytest.raises(Unauthenticated):
        auth.check(token(private, "RS256", iss="another"))

    # Valid claims, HMAC-signed with the public key as the secret: the classic algorithm
    # confusion attack. Only RS256 is accepted, so it fails.
    def part(data: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=")

    claims = {"sub": "alice", "org": "acme", "aud": "gw", "iss": "idp", "exp": time.time() + 60}
    signed = part({"alg": "HS256", "typ": "JWT"}) + b"." + part(claims)
    signature = base64.urlsafe_b64encode(hmac.new(pem, signed, hashlib.sha256).digest())
    forged = (signed + b"." + signature.rstrip(b"=")).decode()
    with pytest.raises(Unauthenticated, match="the token is not valid"):
        auth.check(forged)


def test_loopback_principal_serves_credential_less_loopback_callers_only(tmp_path: Path) -> None:
    auth = authenticator(tmp_path, dev=True, loopback_principal={"user": "t", "org": "o"})
    assert auth.authenticate({}, "127.0.0.1").principal == Principal("t", "o")
    assert auth.authenticate({}, "::1").kind == "loopback"
    with pytest.raises(Unauthenticated):
        auth.authenticate({}, "192.168.1.9")


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (
            "api_keys: [{user: a, org: o, key: a-plain-key-0123456789}]",
            "a plain `key:` is allowed only with dev: true",
        ),
        ("api_keys: [{user: a, org: o, sha256: ABC}]", "auth.api_keys[0].sha256"),
        ("api_keys: [{user: a, org: o}]", "give exactly one of sha256"),
        ("loopback_principal: {user: a, org: o}", "loopback_principal is allowed only with dev"),
        ("jwt: {algorithm: HS256, audience: gw}", "HS256 needs secret_env"),
        ("jwt: {algorithm: RS256, secret_env: X}", "auth.jwt.audience"),
    ],
)
def test_bad_auth_settings_name_the_field(tmp_path: Path, auth: str, message: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"auth:\n  {auth}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_missing_or_short_secret_and_an_unreadable_key_file_are_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JWT_SECRET", raising=False)
    jwt_config = {"algorithm": "HS256", "secret_env": "JWT_SECRET", "audience": "gw"}
    with pytest.raises(ConfigError, match=r"JWT_SECRET \(the HS256 secret\) is not set"):
        authenticator(tmp_path, jwt=jwt_config)
    monkeypatch.setenv("JWT_SECRET", "short")
    with pytest.raises(ConfigError, match="shorter than 32 bytes"):
        authenticator(tmp_path, jwt=jwt_config)
    rs = {"algorithm": "RS256", "public_key_file": "missing.pem", "audience": "gw"}
    with pytest.raises(ConfigError, match="cannot read the RS256 public key"):
        authenticator(tmp_path, jwt=rs)
