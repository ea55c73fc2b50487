"""REST resources: tariffs, prices per kWh of a charger, a site or an organization, with
time-of-day windows (a night tariff)."""

from __future__ import annotations

import logging
from typing import Any

from flask.views import MethodView
from sqlalchemy import Select, or_, select

from cloud.api.auth import current_principal, requires, requires_any
from cloud.api.blueprint import Blueprint
from cloud.api.charging.schemas import (
    TariffQuerySchema,
    TariffSchema,
    TariffUpdateSchema,
)
from cloud.api.errors import field_error, forbidden, not_found
from cloud.api.records import commit
from cloud.api.scoping import get_scoped, target_org
from cloud.audit.service import changes, record
from cloud.billing.models import Tariff
from cloud.db import request_session
from cloud.devices.models import Device
from cloud.organizations.models import Site

log = logging.getLogger(__name__)

tariffs = Blueprint(
    "tariffs",
    __name__,
    url_prefix="/tariffs",
    description="Prices per kWh of a charger, a site or an organization, with time-of-day "
    "windows (a night tariff).",
)


def _tariff_read_clause() -> Any:
    principal = current_principal()
    conditions = []
    for permission in ("sessions:read", "billing:read"):
        orgs = principal.scope(permission).orgs
        if orgs is None:
            return Tariff.id.is_not(None)
        if orgs:
            conditions.append(Tariff.organization_id.in_(sorted(orgs)))
    return or_(*conditions) if conditions else Tariff.id.is_(None)


def _get_tariff(tariff_id: int, permission: str | None = None) -> Tariff:
    found = request_session().scalar(
        select(Tariff).where(Tariff.id == tariff_id, _tariff_read_clause())
    )
    if found is None:
        if permission is not None:
            # Writers without a read permission still reach their organization's tariffs.
            return get_scoped(Tariff, tariff_id, permission, "tariff")
        not_found("tariff")
    if permission is not None and not current_principal().may_in(permission, found.organization_id):
        forbidden(permission)
    return found


def _check_scope(data: dict[str, Any], organization_id: int) -> None:
    """The site or device of a new tariff belongs to its organization; one tariff per scope."""
    session = request_session()
    if data.get("site_id") is not None and data.get("device_id") is not None:
        field_error("device_id", "a tariff is for a charger or for a site, not both")
    if data.get("site_id") is not None:
        site = session.get(Site, data["site_id"])
        if site is None or site.organization_id != organization_id:
            field_error("site_id", "unknown site in the tariff's organization")
    if data.get("device_id") is not None:
        device = session.get(Device, data["device_id"])
        if device is None or device.organization_id != organization_id:
            field_error("device_id", "unknown charger in the tariff's organization")
    stmt = select(Tariff.id).where(Tariff.organization_id == organization_id)
    if data.get("device_id") is not None:
        stmt, field = stmt.where(Tariff.device_id == data["device_id"]), "device_id"
    elif data.get("site_id") is not None:
        stmt = stmt.where(Tariff.site_id == data["site_id"], Tariff.device_id.is_(None))
        field = "site_id"
    else:
        stmt = stmt.where(Tariff.site_id.is_(None), Tariff.device_id.is_(None))
        field = "organization_id"
    if session.scalar(stmt.limit(1)) is not None:
        field_error(field, "there is a tariff for this already; change that one", 409)


@tariffs.route("")
class Tariffs(MethodView):
    @requires_any("sessions:read", "billing:read")
    @tariffs.arguments(TariffQuerySchema, location="query")
    @tariffs.response(200, TariffSchema(many=True))
    @tariffs.paginated()
    def get(self, query: dict[str, Any]) -> Select[Any]:
        """The tariffs of the organizations whose sessions or billing you read."""
        stmt = select(Tariff).where(_tariff_read_clause())
        for column in ("organization_id", "site_id", "device_id"):
            if column in query:
                stmt = stmt.where(getattr(Tariff, column) == query[column])
        return stmt.order_by(Tariff.id)

    @requires("tariffs:write")
    @tariffs.arguments(TariffSchema)
    @tariffs.response(201, TariffSchema)
    def post(self, data: dict[str, Any]) -> Tariff:
        """Set a tariff for a charger (`device_id`), a site (`site_id`) or, with neither, the
        whole organization; the most specific one prices a session. 409 when that scope has
        one already."""
        data["organization_id"] = target_org(data["organization_id"], "tariffs:write")
        _check_scope(data, data["organization_id"])
        tariff = Tariff(**data)
        session = request_session()
        session.add(tariff)
        session.flush()
        record(
            session,
            current_principal(),
            "tariff.create",
            "tariff",
            tariff.id,
            tariff.organization_id,
            {k: str(v) if k == "price_per_kwh" else v for k, v in data.items()},
        )
        commit()
        return tariff


@tariffs.route("/<id:tariff_id>", endpoint="Tariff")
class TariffItem(MethodView):
    @requires_any("sessions:read", "billing:read")
    @tariffs.etag
    @tariffs.response(200, TariffSchema)
    def get(self, tariff_id: int) -> Tariff:
        """Read a tariff."""
        return _get_tariff(tariff_id)

    @requires("tariffs:write")
    @tariffs.etag
    @tariffs.arguments(TariffUpdateSchema)
    @tariffs.response(200, TariffSchema)
    def patch(self, data: dict[str, Any], tariff_id: int) -> Tariff:
        """Change a tariff's name, currency, price or windows (sessions already priced keep
        their cost)."""
        tariff = _get_tariff(tariff_id, "tariffs:write")
        tariffs.check_etag(tariff, TariffSchema)
        diff = changes(tariff, data)
        if diff:
            record(
                request_session(),
                current_principal(),
                "tariff.update",
                "tariff",
                tariff.id,
                tariff.organization_id,
                diff,
            )
        commit()
        return tariff

    @requires("tariffs:write")
    @tariffs.etag
    @tariffs.response(204)
    def delete(self, tariff_id: int) -> None:
        """Delete a tariff (sessions priced by it keep their cost)."""
        tariff = _get_tariff(tariff_id, "tariffs:write")
        tariffs.check_etag(tariff, TariffSchema)
        session = request_session()
        record(
            session,
            current_principal(),
            "tariff.delete",
            "tariff",
            tariff.id,
            tariff.organization_id,
            {"name": tariff.name},
        )
        session.delete(tariff)
        commit()
