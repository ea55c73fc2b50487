"""Bearer-token authentication and the named-permission check every route declares."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g, request

from cloud.api.errors import fail, forbidden
from cloud.db import request_session
from cloud.identity.principal import Principal, load_principal
from cloud.identity.tokens import TokenService

F = TypeVar("F", bound=Callable[..., Any])

SECURITY_SCHEME = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}


def oauth2_scheme(token_url: str) -> dict[str, Any]:
    """The same bearer token, declared as OAuth2's password flow: Swagger UI's Authorize then
    signs in with an e-mail and a password itself. The token URL is relative (resolved against
    the document's own address), so the page works under whatever host name it was opened."""
    return {
        "type": "oauth2",
        "description": "Sign in with your e-mail as username and your password; leave "
        "client_id and client_secret empty.",
        "flows": {"password": {"tokenUrl": token_url, "scopes": {}}},
    }


#: What every protected operation declares: either scheme, both carry the same bearer token.
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"oauth2": []}]


def token_service() -> TokenService:
    """The app's token service."""
    service: TokenService = current_app.extensions["ampfleet.tokens"]
    return service


def current_principal() -> Principal:
    """The authenticated caller of this request (401 when there is none)."""
    if "principal" in g:
        principal: Principal = g.principal
        return principal
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        fail(
            401,
            message="this needs a bearer token",
            headers={"WWW-Authenticate": 'Bearer realm="ampfleet"'},
        )
    # InvalidTokenError propagates: cloud.api.errors answers 401 with RFC 6750's challenge.
    claims = token_service().verify(token.strip())
    g.principal = load_principal(request_session(), claims)
    return current_principal()


def requires(permission: str) -> Callable[[F], F]:
    """Route decorator: the caller must be authenticated and hold ``permission`` somewhere.

    Object-level scoping (which organization, site or group) is the view's job; objects out of
    scope answer 404 so that one organization cannot even learn what another has.
    """

    def decorator(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not current_principal().may(permission):
                forbidden(permission)
            return func(*args, **kwargs)

        # The copy: functools.wraps shares the wrapped function's _apidoc dict.
        doc = copy.deepcopy(getattr(wrapper, "_apidoc", {}))
        manual = doc.setdefault("manual_doc", {})
        manual["security"] = copy.deepcopy(SECURITY)
        manual["x-required-permission"] = permission
        manual["description"] = (
            manual.get("description", "") + f"\n\nRequires the permission `{permission}`."
        ).strip()
        responses = doc.setdefault("response", {}).setdefault("responses", {})
        responses.setdefault(401, []).append("UNAUTHORIZED")
        responses.setdefault(403, []).append("FORBIDDEN")
        wrapper._apidoc = doc  # type: ignore[attr-defined]
        wrapper.required_permission = permission  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorator


def requires_any(*permissions: str) -> Callable[[F], F]:
    """Route decorator: the caller must hold one of ``permissions`` somewhere (the view then
    scopes what each one shows)."""

    def decorator(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = current_principal()
            if not any(principal.may(p) for p in permissions):
                wanted = " or ".join(permissions)
                fail(
                    403,
                    message=f"this needs one of the permissions {wanted}",
                    errors={"permission": list(permissions)},
                )
            return func(*args, **kwargs)

        doc = copy.deepcopy(getattr(wrapper, "_apidoc", {}))
        manual = doc.setdefault("manual_doc", {})
        first, others = permissions[0], permissions[1:]
        alternatives = " or ".join(f"`{p}`" for p in others)
        manual["security"] = copy.deepcopy(SECURITY)
        manual["x-required-permission"] = first
        manual["x-alternative-permissions"] = list(others)
        manual["description"] = (
            manual.get("description", "")
            + f"\n\nRequires the permission `{first}` (or {alternatives}, which shows less)."
        ).strip()
        responses = doc.setdefault("response", {}).setdefault("responses", {})
        responses.setdefault(401, []).append("UNAUTHORIZED")
        responses.setdefault(403, []).append("FORBIDDEN")
        wrapper._apidoc = doc  # type: ignore[attr-defined]
        wrapper.required_permission = permissions[0]  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorator
