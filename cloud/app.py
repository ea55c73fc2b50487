"""The Flask application factory: ``create_app(config=None)``; nothing happens at import."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, g, jsonify, request, send_from_directory
from flask_smorest import Api
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from cloud import __version__
from cloud.api import metrics
from cloud.api.auth import SECURITY_SCHEME, oauth2_scheme
from cloud.api.errors import ErrorSchema, register_error_handlers
from cloud.api.fields import DecimalNumber
from cloud.api.openapi import CommonResponses
from cloud.audit.service import ORIGIN, Origin
from cloud.db import MAX_ID, Database
from cloud.identity.keys import SigningKey
from cloud.identity.passwords import SecretHasher
from cloud.identity.services import Authenticator
from cloud.identity.throttle import LoginThrottle, ThrottlePolicy
from cloud.identity.tokens import TokenService
from cloud.mail.backends import EXTENSION as MAILER
from cloud.mail.backends import open_mailer
from cloud.settings import Settings
from cloud.telemetry.store import open_store

API_PREFIX = "/api/v1"


class _Api(Api):
    """flask-smorest's Api, documenting our error body (``message`` required)."""

    ERROR_SCHEMA = ErrorSchema


class IdConverter(IntegerConverter):
    """``<id:...>``: a record id; out-of-range numbers are 404s, not database errors."""

    def __init__(self, url_map: Any) -> None:
        super().__init__(url_map, min=1, max=MAX_ID)


def create_app(config: Settings | Mapping[str, Any] | None = None) -> Flask:
    """Build the API application from settings (a mapping overrides the environment)."""
    settings = config if isinstance(config, Settings) else Settings.load(config)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = Flask("ampfleet")
    app.url_map.converters["id"] = IdConverter
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        API_TITLE="ampfleet",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX=API_PREFIX,
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL=f"{API_PREFIX}/docs/static/",
        OPENAPI_REDOC_PATH=None,
        API_SPEC_OPTIONS={
            "info": {
                "description": "ampfleet REST API: the device registry, identity and "
                "audit of an EV charger fleet. Every route except the "
                "token endpoint needs a bearer token."
            },
            "components": {
                "securitySchemes": {
                    "bearerAuth": SECURITY_SCHEME,
                    "oauth2": oauth2_scheme(f"{API_PREFIX}/auth/token"),
                }
            },
            "servers": [{"url": settings.public_url}],
        },
    )
    app.extensions["ampfleet.settings"] = settings
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]

    Database(settings.database_url).init_app(app)
    hasher = SecretHasher(settings.password_kdf)
    tokens = TokenService(
        SigningKey.load_or_create(Path(settings.jwt_private_key_file)),
        issuer=settings.public_url,
        ttl=settings.access_token_ttl,
        oidc_issuer=settings.oidc_issuer,
        oidc_jwks_url=settings.oidc_jwks_url,
        oidc_audience=settings.oidc_audience,
        oidc_email_claim=settings.oidc_email_claim,
    )
    app.extensions["ampfleet.hasher"] = hasher
    app.extensions["ampfleet.telemetry"] = open_store(settings)
    app.extensions[MAILER] = open_mailer(settings)
    app.extensions["ampfleet.tokens"] = tokens
    throttle = LoginThrottle(
        ThrottlePolicy(
            max_failures=settings.login_max_failures,
            max_failures_per_address=settings.login_max_failures_per_address,
            max_failures_per_account=settings.login_max_failures_per_account,
            block_seconds=settings.login_block_seconds,
            max_block_seconds=settings.login_max_block_seconds,
            window=settings.login_failure_window,
        )
    )
    app.extensions["ampfleet.authenticator"] = Authenticator(
        hasher, tokens, settings.refresh_token_ttl, throttle
    )

    api = _Api(app, spec_kwargs={"extra_plugins": [CommonResponses()]})
    api.register_converter(
        IdConverter, lambda _c: {"type": "integer", "minimum": 1, "maximum": MAX_ID}
    )
    # A decimal is a string or a number in requests (anyOf in its metadata), a string in answers.
    api.register_field(DecimalNumber, None, None)
    for blueprint in _blueprints():
        api.register_blueprint(blueprint, url_prefix=API_PREFIX + blueprint.url_prefix)
    register_error_handlers(app)
    _track_origin(app)
    _register_well_known(app, tokens)
    metrics.init_app(app)
    return app


def _blueprints() -> list[Any]:
    from cloud.api.access.cards import cards
    from cloud.api.access.guestpass import guest_credentials, platform_keys
    from cloud.api.access.routes import charger_access, invitations_blp
    from cloud.api.audit.routes import audit
    from cloud.api.billing.tariffs import tariffs
    from cloud.api.charging.reports import billing_reports, session_export, session_history
    from cloud.api.charging.routes import charging_sessions, device_sessions
    from cloud.api.commands.routes import device_commands
    from cloud.api.configuration.routes import device_parameters, group_parameters
    from cloud.api.devices.credentials import credentials
    from cloud.api.devices.groups import device_groups
    from cloud.api.devices.routes import devices
    from cloud.api.identity.auth import auth
    from cloud.api.identity.clients import clients
    from cloud.api.identity.roles import permissions, roles
    from cloud.api.identity.users import users
    from cloud.api.manufacturing.routes import (
        batches_blp,
        device_approval,
        enrollment_blp,
        mac_pools,
        quarantine_blp,
    )
    from cloud.api.ocpp.routes import ocpp_chargers
    from cloud.api.organizations.routes import organizations, sites
    from cloud.api.pairing.routes import labels_blp, pairings, releases
    from cloud.api.pki.routes import certificates, device_certificates, pki
    from cloud.api.telemetry.routes import fleet, telemetry

    return [
        auth,
        organizations,
        sites,
        users,
        roles,
        permissions,
        clients,
        devices,
        credentials,
        device_groups,
        device_parameters,
        group_parameters,
        device_commands,
        ocpp_chargers,
        telemetry,
        fleet,
        audit,
        device_sessions,
        charging_sessions,
        tariffs,
        charger_access,
        invitations_blp,
        cards,
        guest_credentials,
        platform_keys,
        session_history,
        session_export,
        billing_reports,
        labels_blp,
        releases,
        pairings,
        batches_blp,
        mac_pools,
        enrollment_blp,
        quarantine_blp,
        device_approval,
        certificates,
        device_certificates,
        pki,
    ]


def _register_well_known(app: Flask, tokens: TokenService) -> None:
    import swagger_ui_bundle

    settings: Settings = app.extensions["ampfleet.settings"]

    @app.get("/.well-known/jwks.json")
    def jwks() -> Any:
        return jsonify(tokens.key.jwks())

    @app.get("/.well-known/openid-configuration")
    def discovery() -> Any:
        # Enough discovery (RFC 8414) for gateways and Grafana to find keys and the token URL.
        base = settings.public_url
        return jsonify(
            {
                "issuer": base,
                "token_endpoint": f"{base}{API_PREFIX}/auth/token",
                "revocation_endpoint": f"{base}{API_PREFIX}/auth/revoke",
                "jwks_uri": f"{base}/.well-known/jwks.json",
                "grant_types_supported": ["password", "client_credentials", "refresh_token"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok", "version": __version__})

    # Swagger UI's files come from a pip package: the docs work without internet access.
    @app.get(f"{API_PREFIX}/docs/static/<path:filename>")
    def swagger_static(filename: str) -> Any:
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename)


def _track_origin(app: Flask) -> None:
    """Tell the audit log where each request comes from (``cloud.audit.service.ORIGIN``)."""

    @app.before_request
    def enter() -> None:
        origin = Origin(request.remote_addr, (request.user_agent.string or "")[:256] or None)
        g.audit_origin = ORIGIN.set(origin)

    @app.teardown_request
    def leave(_exc: BaseException | None) -> None:
        token = g.pop("audit_origin", None)
        if token is not None:
            ORIGIN.reset(token)
