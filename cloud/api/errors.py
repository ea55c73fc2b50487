"""One JSON error body for every error, and helpers that name the offending field.

The body is flask-smorest's: ``{"code": 422, "status": "Unprocessable Entity",
"message": "...", "errors": {"json": {"field": ["why"]}}}``. Field errors are keyed by where the
field came from (``json``, ``query``, ``form``, ``path``) as webargs does for parsing errors.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from flask import Flask
from flask_smorest import abort
from sqlalchemy.exc import IntegrityError, OperationalError
from werkzeug.exceptions import InternalServerError

log = logging.getLogger(__name__)


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
    """Turn database refusals into client errors instead of 500s."""

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

    app.register_error_handler(IntegrityError, integrity)
    app.register_error_handler(OperationalError, unavailable)
    app.register_error_handler(InternalServerError, unexpected)


def _smorest_body(code: int, message: str, errors: dict[str, Any]) -> Any:
    from http import HTTPStatus

    body: dict[str, Any] = {"code": code, "status": HTTPStatus(code).phrase, "message": message}
    if errors:
        body["errors"] = errors
    return body, code
