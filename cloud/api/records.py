"""Small record helpers for views: uniqueness checks that name the field, and commit."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from cloud.api.errors import field_error
from cloud.db import request_session


def ensure_unique(model: Any, field: str, value: Any, exclude: Any = None, **scope: Any) -> None:
    """409 naming ``field`` when another record (within ``scope``) already has ``value``."""
    if value is None:
        return
    stmt = select(model).where(getattr(model, field) == value)
    for column, scoped_value in scope.items():
        stmt = stmt.where(getattr(model, column) == scoped_value)
    existing = request_session().scalars(stmt.limit(1)).first()
    if existing is not None and existing is not exclude:
        field_error(field, f"{value!r} is already taken", status=409)


def commit() -> None:
    """Commit the request's session: the change and its audit entry land together."""
    request_session().commit()
