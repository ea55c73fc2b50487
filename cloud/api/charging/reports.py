"""REST resources: the charging history (/sessions) and the billing reports (/reports).

The history takes ``sessions:read``. Who sees which sessions: holders of ``billing:read`` or
``sessions:read`` org-wide see all of their organization's; ``sessions:read`` narrowed to a
site, a device group or a charger the caller owns (the principal's scope,
``cloud.api.scoping.device_clause``) shows the sessions of those chargers; and a user always
sees their own sessions, also on chargers they no longer reach. A guest, who holds no
``sessions:read``, reads their own sessions on the charger's list (``/devices/{id}/sessions``).
Billing reports (the monthly CSV and the monthly totals) take ``billing:read`` org-wide; their
months are UTC months, a session counted in the month it stopped (``cloud.charging.reports``).

``GET /sessions.csv`` exports the history as CSV, with its filters and its visibility: an owner
exports the sessions of the chargers they own and their own, anyone their own. It takes
``sessions:read``, or ``billing:read`` or ``charging:start`` (a guest), since every user may read
their own sessions; what each shows is ``session_clause``, never more than ``/sessions``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Response, current_app, url_for
from flask.views import MethodView
from marshmallow import ValidationError, fields
from sqlalchemy import ColumnElement, Select, func, or_, select

from cloud.api.auth import current_principal, requires, requires_any
from cloud.api.blueprint import Blueprint
from cloud.api.charging.schemas import SessionSchema
from cloud.api.fields import Links, QueryId, Text, UtcDateTime
from cloud.api.schemas import Schema
from cloud.api.scoping import device_clause, org_clause
from cloud.charging import reports
from cloud.charging.models import ChargingSession, SessionSource, SessionState
from cloud.db import get_database, request_session, utcnow
from cloud.devices.models import Device

BILLING = "billing:read"
SESSIONS = "sessions:read"

session_history = Blueprint(
    "session_history",
    __name__,
    url_prefix="/sessions",
    description="The charging history: every session, by charger, user, card, site or "
    "organization.",
)
session_export = Blueprint(
    "session_export",
    __name__,
    url_prefix="/sessions.csv",
    description="The charging history as CSV: one's own sessions, an owner's chargers', or "
    "what the caller reads of the organization.",
)
billing_reports = Blueprint(
    "billing_reports",
    __name__,
    url_prefix="/reports",
    description="Billing: the sessions of a month as CSV, and the month's totals per "
    "organization and per user.",
)


# --- schemas ----------------------------------------------------------------------------------


class SessionHistoryQuerySchema(Schema):
    """Session history filters."""

    device_id = Text(64)
    user_id = QueryId()
    card_id = QueryId()
    site_id = QueryId()
    organization_id = QueryId()
    from_ = UtcDateTime(
        data_key="from", metadata={"description": "Started at or after (ISO 8601 with zone)."}
    )
    to = UtcDateTime(metadata={"description": "Started before (ISO 8601 with zone)."})
    state = fields.Enum(SessionState, by_value=True)
    source = fields.Enum(SessionSource, by_value=True)


def _month(value: str) -> None:
    try:
        reports.month_bounds(value)
    except ValueError as exc:
        raise ValidationError("Use YYYY-MM, a month in UTC (e.g. 2026-11).") from exc


class ReportQuerySchema(Schema):
    """Which month, and optionally whose sessions."""

    month = Text(
        7,
        validate=_month,
        metadata={"description": "YYYY-MM, a month in UTC; the current one when omitted."},
    )
    organization_id = QueryId()
    site_id = QueryId()
    user_id = QueryId()


class CostSchema(Schema):
    """The priced sessions of one currency."""

    currency = fields.String()
    sessions = fields.Integer()
    cost_cents = fields.Integer()
    cost = fields.String(metadata={"description": "Exact, 2 decimals."})


class TotalsSchema(Schema):
    """Totals of a set of sessions."""

    sessions = fields.Integer()
    energy_wh = fields.Integer(metadata={"description": "Sum of the sessions' whole Wh."})
    kwh = fields.String(metadata={"description": "energy_wh / 1000, exact, 3 decimals."})
    unpriced_sessions = fields.Integer(metadata={"description": "Sessions without a cost."})
    costs = fields.List(fields.Nested(CostSchema))


class OrganizationTotalsSchema(TotalsSchema):
    """One organization's month."""

    organization_id = fields.Integer()


class UserTotalsSchema(TotalsSchema):
    """One user's month (user_id null: sessions of no user, such as free charging)."""

    organization_id = fields.Integer()
    user_id = fields.Integer(allow_none=True)
    email = fields.String(allow_none=True)


class MonthlySummarySchema(Schema):
    """The totals of a month's completed sessions."""

    month = fields.String()
    from_ = fields.DateTime(data_key="from")
    to = fields.DateTime()
    organizations = fields.List(fields.Nested(OrganizationTotalsSchema))
    users = fields.List(fields.Nested(UserTotalsSchema))
    links_ = Links()

    def links(self, obj: Any) -> dict[str, str]:
        return {
            "self": url_for("billing_reports.Monthly", month=obj["month"]),
            "csv": url_for("billing_reports.SessionsCsv", month=obj["month"]),
        }


# --- scoping ----------------------------------------------------------------------------------


def session_clause() -> ColumnElement[bool]:
    """SQL condition: a session the caller may read (see the module docstring)."""
    principal = current_principal()
    conditions = [
        org_clause(ChargingSession.organization_id, BILLING),
        org_clause(ChargingSession.organization_id, SESSIONS),
        ChargingSession.device_id.in_(select(Device.id).where(device_clause(SESSIONS))),
    ]
    if principal.kind == "user":
        conditions.append(ChargingSession.user_id == principal.id)
    return or_(*conditions)


def _billed_conditions(query: dict[str, Any]) -> list[ColumnElement[bool]]:
    conditions = [org_clause(ChargingSession.organization_id, BILLING)]
    for column in ("organization_id", "site_id", "user_id"):
        if column in query:
            conditions.append(getattr(ChargingSession, column) == query[column])
    return conditions


def _month_of(query: dict[str, Any]) -> str:
    month: str = query.get("month") or reports.month_of(utcnow())
    return month


def _history_conditions(query: dict[str, Any]) -> list[ColumnElement[bool]]:
    """The caller's visibility and the history's filters."""
    conditions = [session_clause()]
    for column in (
        "device_id",
        "user_id",
        "card_id",
        "site_id",
        "organization_id",
        "state",
        "source",
    ):
        if column in query:
            conditions.append(getattr(ChargingSession, column) == query[column])
    if "from_" in query:
        conditions.append(ChargingSession.started_at >= query["from_"])
    if "to" in query:
        conditions.append(ChargingSession.started_at < query["to"])
    return conditions


# A requested session has no start yet: it sorts by when it was asked for.
_NEWEST = (
    func.coalesce(ChargingSession.started_at, ChargingSession.created_at).desc(),
    ChargingSession.id.desc(),
)


# --- routes -----------------------------------------------------------------------------------


@session_history.route("", endpoint="Sessions")
class Sessions(MethodView):
    @requires(SESSIONS)
    @session_history.arguments(SessionHistoryQuerySchema, location="query")
    @session_history.response(200, SessionSchema(many=True))
    @session_history.paginated()
    def get(self, query: dict[str, Any]) -> Select[Any]:
        """The charging history, newest first, by charger, user, card, site, organization,
        state, source or start time (`from` inclusive, `to` exclusive)."""
        return select(ChargingSession).where(*_history_conditions(query)).order_by(*_NEWEST)


def _streamed(stmt: Any, *, history: bool = False) -> Iterator[str]:
    """The CSV of ``stmt``'s rows, read in batches on a session of its own while the body is
    sent. Not the request's session: the request ends (and closes it) before the body is
    streamed, and a session used after that would hold a transaction, and on MariaDB its
    metadata locks, for as long as the connection lives. This one is closed when the body has
    been sent or the client went away."""
    database = get_database(current_app)

    def chunks() -> Iterator[str]:
        with database.session() as session:
            yield from reports.csv_chunks(reports.billing_rows(session, stmt), history=history)

    return chunks()


@session_export.route("", endpoint="SessionsCsv")
class HistoryCsv(MethodView):
    @requires_any(SESSIONS, BILLING, "charging:start")
    @session_export.arguments(SessionHistoryQuerySchema, location="query")
    @session_export.response(
        200,
        content_type="text/csv",
        description="One row per session of the history, newest first: "
        + ", ".join(reports.HISTORY_COLUMNS)
        + ". Times are ISO 8601 UTC; kwh has 3 decimals, cost 2 (empty until priced).",
    )
    def get(self, query: dict[str, Any]) -> Response:
        """The charging history as CSV (streamed), with the filters of `/sessions`: an owner
        exports the sessions of the chargers they own and their own, a guest their own."""
        stmt = reports.annotated(_history_conditions(query)).order_by(*_NEWEST)
        response = Response(_streamed(stmt, history=True), mimetype="text/csv")
        response.headers["Content-Disposition"] = 'attachment; filename="sessions.csv"'
        return response


@billing_reports.route("/sessions.csv", endpoint="SessionsCsv")
class SessionsCsv(MethodView):
    @requires(BILLING)
    @billing_reports.arguments(ReportQuerySchema, location="query")
    @billing_reports.response(
        200,
        content_type="text/csv",
        description="One row per completed session that stopped in the month (UTC): "
        + ", ".join(reports.CSV_COLUMNS)
        + ". Times are ISO 8601 UTC; kwh has 3 decimals, cost 2.",
    )
    def get(self, query: dict[str, Any]) -> Response:
        """The month's completed sessions as CSV, for billing (streamed)."""
        month = _month_of(query)
        start, end = reports.month_bounds(month)
        stmt = reports.billed(start, end, _billed_conditions(query))
        response = Response(_streamed(stmt), mimetype="text/csv")
        response.headers["Content-Disposition"] = f'attachment; filename="sessions-{month}.csv"'
        return response


@billing_reports.route("/monthly", endpoint="Monthly")
class Monthly(MethodView):
    @requires(BILLING)
    @billing_reports.arguments(ReportQuerySchema, location="query")
    @billing_reports.response(200, MonthlySummarySchema)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """The month's totals (UTC) per organization and per user: sessions, kWh, cost per
        currency; the same figures as the CSV export's rows, added up."""
        month = _month_of(query)
        start, end = reports.month_bounds(month)
        rows = reports.billing_rows(
            request_session(), reports.billed(start, end, _billed_conditions(query))
        )
        return {"month": month, "from_": start, "to": end, **reports.monthly_summary(rows)}
