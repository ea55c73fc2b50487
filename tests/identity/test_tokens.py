"""OAuth2 token endpoint, refresh rotation, revocation, JWKS and an external OIDC issuer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask

from cloud.app import create_app
from cloud.identity.keys import SigningKey
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD, Client, Tenant, settings_for

TOKEN = "/auth/token"


def password_grant(client: Client, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> Any:
    return client.post(
        TOKEN, data={"grant_type": "password", "username": email, "password": password}
    )


def test_password_grant_issues_a_verifiable_rs256_token_and_a_refresh_token(
    client: Client, app: Flask
) -> None:
    response = password_grant(client)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    assert body["refresh_token"].startswith("rt_")
    jwks = client.get("/.well-known/jwks.json").get_json()
    assert client.get("/auth/jwks").get_json() == jwks
    key = jwt.PyJWK(jwks["keys"][0])
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "RS256" and header["kid"] == jwks["keys"][0]["kid"]
    claims = jwt.decode(
        body["access_token"], key.key, algorithms=["RS256"], audience="ampfleet-api"
    )
    assert claims["sub"].startswith("user:") and claims["exp"] - claims["iat"] == 900
    me = client.get("/auth/me", token=body["access_token"]).get_json()
    assert me["name"] == ADMIN_EMAIL and me["kind"] == "user"


@pytest.mark.parametrize(
    "form",
    [
        {"grant_type": "password", "username": ADMIN_EMAIL, "password": "wrong-password-123"},
        {"grant_type": "password", "username": "nobody@example.com", "password": ADMIN_PASSWORD},
    ],
)
def test_wrong_credentials_are_invalid_grant(client: Client, form: dict[str, str]) -> None:
    response = client.post(TOKEN, data=form)
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == 400 and body["errors"] == {"error": "invalid_grant"}


def test_unsupported_grant_and_missing_fields_name_the_field(client: Client) -> None:
    response = client.post(TOKEN, data={"grant_type": "implicit"})
    assert response.status_code == 400
    assert "grant_type" in response.get_json()["errors"]["form"]
    response = client.post(TOKEN, data={})
    assert "grant_type" in response.get_json()["errors"]["form"]


def test_disabled_user_cannot_sign_in_and_its_tokens_stop_working(tenant: Tenant) -> None:
    user, user_client = tenant.user("operator")
    assert user_client.get("/devices").status_code == 200
    assert tenant.admin.patch(f"/users/{user['id']}", json={"is_active": False}).status_code == 200
    assert user_client.get("/devices").status_code == 401
    assert password_grant(user_client, user["email"], PASSWORD).status_code == 400


def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_family(client: Client) -> None:
    first = password_grant(client).get_json()
    second = client.post(
        TOKEN, data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert second.status_code == 200
    second_body = second.get_json()
    assert second_body["refresh_token"] != first["refresh_token"]
    # The first one is spent: presenting it again looks like theft and kills the family.
    replay = client.post(
        TOKEN, data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert replay.status_code == 400
    assert "already used" in replay.get_json()["message"]
    after = client.post(
        TOKEN, data={"grant_type": "refresh_token", "refresh_token": second_body["refresh_token"]}
    )
    assert after.status_code == 400


def test_revoke_signs_out(client: Client) -> None:
    tokens = password_grant(client).get_json()
    assert client.post("/auth/revoke", data={"token": tokens["refresh_token"]}).status_code == 200
    refused = client.post(
        TOKEN, data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert refused.status_code == 400
    # RFC 7009: revoking an unknown token is not an error.
    assert client.post("/auth/revoke", data={"token": "rt_nothing.here"}).status_code == 200


def test_client_credentials_grant_with_basic_and_form_authentication(tenant: Tenant) -> None:
    admin = tenant.admin
    operator_role = next(
        r for r in admin.get("/roles", query_string={"name": "support"}).get_json() if r["system"]
    )
    made = admin.created(
        "/clients",
        {
            "name": "billing export",
            "organization_id": tenant.id,
            "roles": [{"role_id": operator_role["id"]}],
        },
    )
    secret = made["client_secret"]
    assert admin.get(f"/clients/{made['id']}").get_json().get("client_secret") is None
    basic = base64.b64encode(f"{made['client_id']}:{secret}".encode()).decode()
    by_basic = admin.http.post(
        "/api/v1/auth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert by_basic.status_code == 200 and "refresh_token" not in by_basic.get_json()
    by_form = admin.http.post(
        "/api/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": made["client_id"],
            "client_secret": secret,
        },
    )
    assert by_form.status_code == 200
    token = by_form.get_json()["access_token"]
    assert admin.get("/devices", token=token).status_code == 200
    assert (
        admin.post(
            "/devices", token=token, json={"serial": "x", "hardware_family": "ac22-3p"}
        ).status_code
        == 403
    )

    rotated = admin.post(f"/clients/{made['id']}/secret").get_json()["client_secret"]
    wrong = admin.http.post(
        "/api/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": made["client_id"],
            "client_secret": secret,
        },
    )
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Basic")
    assert (
        admin.http.post(
            "/api/v1/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": made["client_id"],
                "client_secret": rotated,
            },
        ).status_code
        == 200
    )


def test_expired_and_forged_tokens_are_refused_with_the_reason(app: Flask, client: Client) -> None:
    key = app.extensions["ampfleet.tokens"].key
    issuer = app.extensions["ampfleet.tokens"].issuer
    now = int(time.time())
    base = {"iss": issuer, "aud": "ampfleet-api", "sub": "user:1", "org": 1, "iat": now - 10}
    expired = jwt.encode({**base, "exp": now - 5}, key.private_key, algorithm="RS256")
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode({**base, "exp": now + 60}, other_key, algorithm="RS256")
    # HS256 keyed with the public key (algorithm confusion) and alg=none, built by hand since
    # PyJWT refuses to make them.
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    payload = {**base, "exp": now + 60}
    confused = _handmade(
        payload, "HS256", lambda msg: hmac.new(public_pem, msg, hashlib.sha256).digest()
    )
    unsigned = _handmade(payload, "none", lambda _msg: b"")
    cases = {
        "expired": (expired, "expired"),
        "forged": (forged, "not valid"),
        "garbage": ("not.a.jwt", "not a JWT"),
        "hs256": (confused, "not valid"),
        "none": (unsigned, "not valid"),
    }
    for name, (token, reason) in cases.items():
        response = client.get("/devices", token=token)
        assert response.status_code == 401, name
        assert reason in response.get_json()["message"], name
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"], name
    missing = client.get("/devices")
    assert missing.status_code == 401 and missing.get_json()["code"] == 401


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _handmade(payload: dict[str, Any], alg: str, sign: Any) -> str:
    signing_input = (
        _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        + "."
        + _b64(json.dumps(payload).encode())
    )
    return signing_input + "." + _b64(sign(signing_input.encode()))


class _JwksServer:
    """A real HTTP server publishing a JWKS: the external identity provider's side."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        body = json.dumps(jwks).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/jwks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def idp() -> Iterator[tuple[SigningKey, str]]:
    key = SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    server = _JwksServer(key.jwks())
    yield key, server.url
    server.server.shutdown()


def test_tokens_of_an_external_oidc_issuer_are_accepted_for_known_users(
    app: Flask, tenant: Tenant, idp: tuple[SigningKey, str], tmp_path: Any
) -> None:
    idp_key, jwks_url = idp
    user, _ = tenant.user("support")
    settings = settings_for(tmp_path, app.extensions["ampfleet.settings"].database_url)
    external = create_app(
        {
            **settings,
            "oidc_issuer": "https://sso.example.test/realms/af",
            "oidc_jwks_url": jwks_url,
            "oidc_audience": "ampfleet",
        }
    )
    client = Client(external.test_client())
    now = int(time.time())

    def token(**over: Any) -> str:
        claims = {
            "iss": "https://sso.example.test/realms/af",
            "aud": "ampfleet",
            "sub": "kc-123",
            "email": user["email"],
            "iat": now,
            "exp": now + 300,
            **over,
        }
        return jwt.encode(
            claims, idp_key.private_key, algorithm="RS256", headers={"kid": idp_key.kid}
        )

    assert client.get("/devices", token=token()).status_code == 200
    assert client.get("/devices", token=token(aud="someone-else")).status_code == 401
    assert client.get("/devices", token=token(email="stranger@x.test")).status_code == 401
    assert client.get("/devices", token=token(exp=now - 1)).status_code == 401
