"""REST resources: /auth (OAuth2 token endpoint, revocation, JWKS, the caller)."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote

from flask import Response, current_app, jsonify, request
from flask.views import MethodView

from cloud.api.auth import SECURITY, current_principal, token_service
from cloud.api.blueprint import Blueprint
from cloud.api.errors import NO_STORE
from cloud.api.identity.schemas import (
    MeSchema,
    RevokeRequestSchema,
    TokenRequestSchema,
    TokenResponseSchema,
)
from cloud.audit.service import record
from cloud.db import request_session
from cloud.identity import GrantError, LoginThrottledError, RefreshReuseError
from cloud.identity.models import User
from cloud.identity.principal import Principal
from cloud.identity.services import Authenticator, IssuedTokens

auth = Blueprint(
    "auth",
    __name__,
    url_prefix="/auth",
    description="OAuth2 tokens (RFC 6749), revocation (RFC 7009), signing keys.",
)


def authenticator() -> Authenticator:
    """The app's authenticator."""
    service: Authenticator = current_app.extensions["ampfleet.authenticator"]
    return service


def _basic_credentials() -> tuple[str, str] | None:
    """client_secret_basic (RFC 6749 section 2.3.1): form-urlencoded id and secret."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (unquote(client_id), unquote(secret)) if sep else None


@auth.route("/token")
class Token(MethodView):
    @auth.arguments(TokenRequestSchema, location="form", error_status_code=400)
    @auth.response(200, TokenResponseSchema, headers=None)
    @auth.alt_response(400, response="BAD_REQUEST")
    @auth.alt_response(401, response="UNAUTHORIZED")
    @auth.alt_response(429, response="TOO_MANY_REQUESTS")
    def post(self, form: dict[str, Any]) -> Any:
        """Get an access token: password, client_credentials or refresh_token grant.

        Public route. Send `application/x-www-form-urlencoded`; clients may authenticate with
        HTTP Basic or form fields. Access tokens are RS256 JWTs (see /auth/jwks). Failed
        password logins are throttled per account and client address: 429 with Retry-After.
        """
        session = request_session()
        service = authenticator()
        try:
            issued = self._grant(service, session, form)
        except (GrantError, LoginThrottledError) as exc:
            session.rollback()
            if _audit_refusal(session, service, form, exc):
                session.commit()
            raise  # answered by cloud.api.errors: 400, 401 for invalid_client, 429 throttled
        if form["grant_type"] == "password":
            user = service.account(session, form["username"])
            if user is not None:
                record(session, _as_user(user), "auth.login", "user", user.id, user.organization_id)
        session.commit()
        body = {k: v for k, v in vars(issued).items() if v is not None}
        return body, 200, NO_STORE

    @staticmethod
    def _grant(service: Authenticator, session: Any, form: dict[str, Any]) -> IssuedTokens:
        grant = form["grant_type"]
        if grant == "password":
            if not form.get("username") or not form.get("password"):
                raise GrantError("invalid_request", "username and password are required")
            return service.password_grant(
                session, form["username"], form["password"], request.remote_addr
            )
        if grant == "client_credentials":
            creds = _basic_credentials() or (form.get("client_id"), form.get("client_secret"))
            if not creds[0] or not creds[1]:
                raise GrantError("invalid_client", "client_id and client_secret are required")
            return service.client_credentials_grant(session, creds[0], creds[1])
        if not form.get("refresh_token"):
            raise GrantError("invalid_request", "refresh_token is required")
        return service.refresh_grant(session, form["refresh_token"])


# Who tried a login that failed: not anybody the platform knows yet.
_ANONYMOUS = Principal(kind="anonymous", id=0, name="(not signed in)", organization_id=0, grants=())


def _as_user(user: User) -> Principal:
    """The audit log's actor for a user signing in (its grants do not matter there)."""
    return Principal(
        kind="user", id=user.id, name=user.email, organization_id=user.organization_id, grants=()
    )


def _audit_refusal(
    session: Any, service: Authenticator, form: dict[str, Any], exc: Exception
) -> bool:
    """Audit a refused password login (wrong, throttled) or a reused refresh token; True when an
    entry was added. Never the password or the token, only the e-mail given and why."""
    if isinstance(exc, RefreshReuseError):
        owner = session.get(User, exc.user_id)
        record(
            session,
            _ANONYMOUS,
            "auth.refresh_reused",
            "user",
            exc.user_id,
            owner.organization_id if owner else None,
            {"family": exc.family_id, "revoked": True},
        )
        return True
    email = (form.get("username") or "").strip().lower()[:254]
    if form["grant_type"] != "password" or not email or not form.get("password"):
        return False
    user = service.account(session, email)
    details: dict[str, Any] = {"email": email}
    if isinstance(exc, LoginThrottledError):
        action, details["retry_after"] = "auth.login_throttled", exc.retry_after
    else:
        action = "auth.login_failed"
        details["reason"] = (
            "unknown account"
            if user is None
            else "user disabled"
            if not user.is_active
            else "wrong password"
        )
    record(
        session,
        _ANONYMOUS,
        action,
        "user",
        user.id if user else "unknown",
        user.organization_id if user else None,
        details,
    )
    return True


@auth.route("/revoke")
class Revoke(MethodView):
    @auth.arguments(RevokeRequestSchema, location="form", error_status_code=400)
    @auth.response(200)
    def post(self, form: dict[str, Any]) -> Any:
        """Revoke a refresh token and every token rotated from it (sign out). Public route."""
        session = request_session()
        authenticator().revoke(session, form["token"])
        session.commit()
        return "", 200, NO_STORE


@auth.route("/jwks")
class Jwks(MethodView):
    @auth.response(200)
    def get(self) -> Response:
        """The JSON Web Key Set that verifies our access tokens. Public route."""
        return jsonify(token_service().key.jwks())


@auth.route("/me")
class Me(MethodView):
    @auth.response(200, MeSchema)
    @auth.alt_response(401, response="UNAUTHORIZED")
    @auth.doc(security=SECURITY)
    def get(self) -> Principal:
        """The caller and what it holds where. Needs only a valid token."""
        return current_principal()
