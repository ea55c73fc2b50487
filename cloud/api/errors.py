"""One JSON error body for every error, and helpers that name the offending field.

The body is flask-smorest's: ``{"code": 422, "status": "Unprocessable Entity",
"message": "...", "errors": {"json": {"field": ["why"]}}}``. Field errors are keyed by where the
field came from (``json``, ``query``, ``form``, ``path``) as webargs does for parsing errors.

Domain errors carry no HTTP status: :data:`DOMAIN_ERRORS` is the one table from a domain
exception class to its answer (status, body, headers), and :func:`register_error_handlers`
makes Flask answer every domain root with it, so that a route lets them propagate.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import marshmallow as ma
from flask import Flask
from flask_smorest import abort
from sqlalchemy.exc import IntegrityError, OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.http import HTTP_STATUS_CODES

from cloud.access import AccessError
from cloud.access.guestpass import GuestCredentialError, NotAGuestError
from cloud.access.invitations import (
    AccountError,
    InvitationClosedError,
    InvitationError,
    InvitationState,
)
from cloud.audit import AuditError
from cloud.billing import BillingError
from cloud.charging import ChargingError
from cloud.charging.sessions import SessionNotActiveError
from cloud.commands import CommandError, CommandNotPermittedError, CommandRefusedError
from cloud.configuration import ConfigurationError, UnknownFamilyError
from cloud.devices import DevicesError
from cloud.identity import (
    DuplicateAssignmentError,
    GrantError,
    IdentityError,
    InvalidTokenError,
    LastAdminError,
    LoginThrottledError,
    RoleFloorError,
)
from cloud.manufacturing import (
    EnrollmentError,
    MacPoolError,
    MacPoolExhaustedError,
    MacTakenError,
    ManufacturingError,
    SerialTakenError,
    StateError,
)
from cloud.organizations import OrganizationsError
from cloud.pairing import (
    CodeFormatError,
    LockedOutError,
    PairingConflictError,
    PairingError,
    UnknownCodeError,
    WrongBoxCodeError,
)
from cloud.pki import (
    AlreadyRevokedError,
    CertificateNotFoundError,
    CertificateRefusedError,
    CsrRejectedError,
    DeviceNotEligibleError,
    KeyEncryptionError,
    NoCurrentCertificateError,
    PkiError,
    RevocationReasonError,
)
from cloud.telemetry import StoreUnavailableError, TelemetryError
from parameters import ParameterSchemaError

log = logging.getLogger(__name__)

#: Headers of every token endpoint answer (RFC 6749 section 5.1).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class ErrorSchema(ma.Schema):
    """The one error body, as the OpenAPI document declares it: ``message`` always there."""

    class Meta:
        unknown = ma.INCLUDE  # documentation only: a later key is no schema mismatch

    code = ma.fields.Integer(required=True, metadata={"description": "The HTTP status."})
    status = ma.fields.String(required=True, metadata={"description": "Its reason phrase."})
    message = ma.fields.String(
        required=True,
        metadata={
            "description": "What went wrong, for a person; a 422 names the first fields "
            "(`json.serial: Missing data for required field.`)."
        },
    )
    errors = ma.fields.Dict(
        metadata={"description": "The fields at fault by location (`json`, `query`, ...)."}
    )


@dataclasses.dataclass(frozen=True)
class Answer:
    """What a domain error becomes over HTTP: flask-smorest's body, with ``errors`` only when
    given, and extra headers."""

    status: int
    message: str
    errors: dict[str, Any] | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def response(self) -> tuple[dict[str, Any], int, dict[str, str]]:
        """(body, status, headers), as flask-smorest's handler of ``abort`` makes them."""
        body: dict[str, Any] = {
            "code": self.status,
            "status": HTTP_STATUS_CODES[self.status],
            "message": self.message,
        }
        if self.errors is not None:
            body["errors"] = self.errors
        return body, self.status, dict(self.headers)


def _grant(exc: GrantError) -> Answer:
    # RFC 6749 section 5.2: 401 with a challenge when the client failed to authenticate, 400
    # otherwise; RFC 6749's error code goes into ``errors`` for OAuth2 clients.
    if exc.error == "invalid_client":
        headers = {**NO_STORE, "WWW-Authenticate": 'Basic realm="ampfleet"'}
        return Answer(401, exc.description, {"error": exc.error}, headers)
    return Answer(400, exc.description, {"error": exc.error}, NO_STORE)


def _invalid_token(exc: InvalidTokenError) -> Answer:
    # RFC 6750 section 3: tell the client why, so it knows to refresh rather than retry.
    reason = str(exc)
    challenge = f'Bearer realm="ampfleet", error="invalid_token", error_description="{reason}"'
    return Answer(401, reason, headers={"WWW-Authenticate": challenge})


def _login_throttled(exc: LoginThrottledError) -> Answer:
    # RFC 6585 section 4: 429 with Retry-After; the token endpoint's no-store headers too.
    headers = {**NO_STORE, "Retry-After": str(exc.retry_after)}
    return Answer(429, str(exc), {"error": "too_many_attempts"}, headers)


def _duplicate_assignment(exc: DuplicateAssignmentError) -> Answer:
    return Answer(409, str(exc), {"json": {exc.field: [exc.message]}})


def _last_admin(exc: LastAdminError) -> Answer:
    return Answer(409, str(exc), {"platform-admin": [str(exc)]})


def _role_floor(exc: RoleFloorError) -> Answer:
    return Answer(409, f"permissions: {exc}", {"json": {"permissions": [str(exc)]}})


def _invitation(exc: InvitationError, status: int = 400) -> Answer:
    if exc.field:
        message = exc.message
        return Answer(status, f"{exc.field}: {message}", {"json": {exc.field: [message]}})
    return Answer(status, exc.message, {"invitation": [exc.reason]})


def _invitation_closed(exc: InvitationClosedError) -> Answer:
    # Accepted: the invitation is there but used (409); revoked or expired: gone for good (410).
    return _invitation(exc, 409 if exc.reason == InvitationState.ACCEPTED else 410)


def _account(exc: AccountError) -> Answer:
    # A field given wrongly (the password) is 422; the account's state (disabled) a conflict.
    return _invitation(exc, 422 if exc.field else 409)


def _guest_credential(exc: GuestCredentialError) -> Answer:
    # Not a guest: a matter of who asks (403); a window closed or far ahead: of when (409).
    status = 403 if isinstance(exc, NotAGuestError) else 409
    return Answer(status, str(exc), {"guest": [exc.reason]})


def _command_refused(exc: CommandRefusedError) -> Answer:
    # ``args.<id>`` is named inside ``args``, as the configuration names ``values.<id>``.
    head, _, key = exc.field.partition(".")
    errors: dict[str, Any] = {head: {key: [exc.message]}} if key else {head: [exc.message]}
    return Answer(422, str(exc), {"json": errors})


def _command_not_permitted(exc: CommandNotPermittedError) -> Answer:
    return Answer(403, exc.message, {"command": [exc.message]})


def _session_not_active(exc: SessionNotActiveError) -> Answer:
    return Answer(409, str(exc), {"state": [str(exc)]})


def _unknown_family(exc: UnknownFamilyError) -> Answer:
    message = f"no parameter schema for {exc.family_id!r}"
    return Answer(409, f"hardware_family: {exc}", {"hardware_family": [message]})


def _pairing(exc: PairingError, status: int = 422) -> Answer:
    if exc.reason == "not_owner":
        return Answer(403, exc.message, {"device_id": [exc.message]})
    if exc.field is None:
        return Answer(status, exc.message, {exc.reason: [exc.message]})
    return Answer(status, f"{exc.field}: {exc.message}", {"json": {exc.field: [exc.message]}})


def _unknown_code(exc: UnknownCodeError) -> Answer:
    return _pairing(exc, 404)


def _pairing_conflict(exc: PairingConflictError) -> Answer:
    return _pairing(exc, 409)


def _locked_out(exc: LockedOutError) -> Answer:
    # RFC 6585 section 4: 429 with Retry-After, naming the charger (its code) or the account.
    where = {"json": {exc.field: [exc.message]}} if exc.field else {"user": [exc.message]}
    return Answer(429, exc.message, where, {"Retry-After": str(exc.retry_after)})


def _store_unavailable(exc: StoreUnavailableError) -> Answer:
    return Answer(503, f"the telemetry store is unavailable: {exc}")


def _manufacturing(exc: ManufacturingError, status: int = 422) -> Answer:
    # The field at fault as webargs names it, and the reason code a station can act on.
    field = exc.field or "request"
    errors = {"json": {field: [exc.message]}, "reason": [exc.reason]}
    return Answer(status, f"{field}: {exc.message}", errors)


def _manufacturing_conflict(exc: ManufacturingError) -> Answer:
    return _manufacturing(exc, 409)


def _mac_pool(exc: MacPoolError) -> Answer:
    return _manufacturing(exc, 409 if exc.reason == "mac_pool_overlap" else 422)


# An enrollment refused because of the serial's state (not approved yet, enrolled already, its
# device id taken) conflicts with what exists; any other refusal is bad input.
_ENROLLMENT_CONFLICTS = frozenset({"not_approved", "already_enrolled", "device_exists"})


def _enrollment(exc: EnrollmentError) -> Answer:
    return _manufacturing(exc, 409 if exc.reason in _ENROLLMENT_CONFLICTS else 422)


def _csr_rejected(exc: CsrRejectedError) -> Answer:
    return Answer(422, f"csr: {exc.reason}", {"json": {"csr": [exc.reason]}})


def _revocation_reason(exc: RevocationReasonError) -> Answer:
    return Answer(422, f"reason: {exc}", {"json": {"reason": [str(exc)]}})


def _certificate_refused(exc: CertificateRefusedError) -> Answer:
    return Answer(422, f"certificate: {exc.reason}", {"json": {"certificate": [exc.reason]}})


def _pki_conflict(exc: PkiError) -> Answer:
    return Answer(409, str(exc), {"certificate": [str(exc)]})


def _key_encryption(exc: KeyEncryptionError) -> Answer:
    # The server's configuration, not the request: logged for the operator, 503 for the caller.
    log.error("the PKI cannot open its keys: %s", exc)
    return Answer(503, "the PKI is unavailable: its key-encryption key is not usable")


#: Domain exception class -> its HTTP answer; the most specific class of an error wins. A domain
#: error whose class is not here is a bug: 500, logged.
DOMAIN_ERRORS: Mapping[type[Exception], Callable[[Any], Answer]] = {
    GrantError: _grant,
    InvalidTokenError: _invalid_token,
    LoginThrottledError: _login_throttled,
    DuplicateAssignmentError: _duplicate_assignment,
    LastAdminError: _last_admin,
    RoleFloorError: _role_floor,
    InvitationError: _invitation,
    PairingError: _pairing,
    CodeFormatError: _pairing,
    WrongBoxCodeError: _pairing,
    UnknownCodeError: _unknown_code,
    PairingConflictError: _pairing_conflict,
    LockedOutError: _locked_out,
    InvitationClosedError: _invitation_closed,
    AccountError: _account,
    GuestCredentialError: _guest_credential,
    CommandRefusedError: _command_refused,
    CommandNotPermittedError: _command_not_permitted,
    SessionNotActiveError: _session_not_active,
    UnknownFamilyError: _unknown_family,
    StoreUnavailableError: _store_unavailable,
    ManufacturingError: _manufacturing,
    StateError: _manufacturing_conflict,
    SerialTakenError: _manufacturing_conflict,
    MacPoolError: _mac_pool,
    MacPoolExhaustedError: _manufacturing_conflict,
    MacTakenError: _manufacturing_conflict,
    EnrollmentError: _enrollment,
    CsrRejectedError: _csr_rejected,
    RevocationReasonError: _revocation_reason,
    CertificateRefusedError: _certificate_refused,
    CertificateNotFoundError: lambda exc: Answer(404, str(exc)),
    NoCurrentCertificateError: _pki_conflict,
    AlreadyRevokedError: _pki_conflict,
    DeviceNotEligibleError: _pki_conflict,
    KeyEncryptionError: _key_encryption,
    PkiError: lambda exc: Answer(409, str(exc)),
}

#: The roots of the domain packages a request can meet; Flask hands each to :func:`answer`.
DOMAIN_ROOTS: tuple[type[Exception], ...] = (
    AccessError,
    AuditError,
    BillingError,
    ChargingError,
    CommandError,
    ConfigurationError,
    DevicesError,
    IdentityError,
    ManufacturingError,
    OrganizationsError,
    PairingError,
    ParameterSchemaError,  # UnknownFamilyError: a device's family has no shipped schema
    PkiError,
    TelemetryError,
)


def answer(exc: Exception) -> Answer | None:
    """The HTTP answer of a domain error (None: no entry, a bug)."""
    for cls in type(exc).__mro__:
        render = DOMAIN_ERRORS.get(cls)
        if render is not None:
            return render(exc)
    return None


def fail(status: int, **kwargs: Any) -> NoReturn:
    """Abort with the one error body (flask-smorest's abort, typed as not returning)."""
    abort(status, **kwargs)
    raise AssertionError("abort returned")  # pragma: no cover


def field_error(field: str, message: str, status: int = 422, location: str = "json") -> NoReturn:
    """Abort naming the field that is wrong."""
    fail(status, message=f"{field}: {message}", errors={location: {field: [message]}})


def not_found(what: str) -> NoReturn:
    """Abort with 404: the object does not exist or the caller may not know it does."""
    fail(404, message=f"{what} not found")


def forbidden(permission: str) -> NoReturn:
    """Abort with 403 naming the missing permission."""
    fail(
        403,
        message=f"this needs the permission {permission!r}",
        errors={"permission": [permission]},
    )


def register_error_handlers(app: Flask) -> None:
    """Answer domain errors from :data:`DOMAIN_ERRORS`; turn database refusals into client
    errors instead of 500s."""

    def domain(exc: Exception) -> Any:
        found = answer(exc)
        if found is None:
            log.error("unhandled domain error", exc_info=exc)
            return _smorest_body(500, "internal error, see the server log", {})
        return found.response()

    def integrity(exc: IntegrityError) -> Any:
        # Views check uniqueness and references first and name the field; this catches races.
        log.info("integrity error: %s", exc.orig)
        return _smorest_body(409, "the change conflicts with existing data", {})

    def unavailable(exc: OperationalError) -> Any:
        log.error("database unavailable: %s", exc.orig)
        return _smorest_body(503, "the database is unavailable, retry later", {})

    def unexpected(exc: InternalServerError) -> Any:
        original = exc.original_exception
        if original is not None:
            log.exception("unhandled error", exc_info=original)
        return _smorest_body(500, "internal error, see the server log", {})

    for root in DOMAIN_ROOTS:
        app.register_error_handler(root, domain)
    # Replaces flask-smorest's handler (registered by Api(app) before this): the same body, with
    # a message always.
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(IntegrityError, integrity)
    app.register_error_handler(OperationalError, unavailable)
    app.register_error_handler(InternalServerError, unexpected)


def http_error(exc: HTTPException) -> Any:
    """flask-smorest's body for an HTTP error, whose ``message`` is never missing: a parsing
    error (webargs' 422 and 400) names its first fields, ``json.serial: Missing data for
    required field.``; others say what werkzeug says. Werkzeug's own headers (``Allow`` of a
    405, ``WWW-Authenticate``) are kept."""
    code = exc.code or 500
    data: dict[str, Any] = getattr(exc, "data", None) or {}
    errors = data.get("errors", data.get("messages"))
    message = data.get("message") or error_summary(errors) or _description(exc, code)
    body: dict[str, Any] = {"code": code, "status": HTTP_STATUS_CODES.get(code, exc.name)}
    body["message"] = message
    if errors:
        body["errors"] = errors
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    headers.update(data.get("headers") or {})
    return body, code, headers


def error_summary(errors: Any, limit: int = 3) -> str:
    """``where.field: why`` for the first ``limit`` fields of a nested error dict."""
    found: list[str] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if len(found) >= limit:
            return
        if isinstance(node, Mapping):
            for key, value in node.items():
                # marshmallow's schema-level errors sit under _schema: named by their parent.
                walk(value, path if key == "_schema" else (*path, str(key)))
        elif isinstance(node, list | tuple) and all(isinstance(v, str) for v in node):
            if node:
                found.append(f"{'.'.join(path) or 'request'}: {' '.join(node)}")
        elif isinstance(node, list | tuple):
            for value in node:
                walk(value, path)
        elif node is not None:
            found.append(f"{'.'.join(path) or 'request'}: {node}")

    walk(errors, ())
    return "; ".join(found)


def _description(exc: HTTPException, code: int) -> str:
    text = (exc.description or "").strip()
    return text or HTTP_STATUS_CODES.get(code, "error")


def _smorest_body(code: int, message: str, errors: dict[str, Any]) -> Any:
    from http import HTTPStatus

    body: dict[str, Any] = {"code": code, "status": HTTPStatus(code).phrase, "message": message}
    if errors:
        body["errors"] = errors
    return body, code
