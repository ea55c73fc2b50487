"""Moving a device to another site or organization without leaking anything across tenants.

A move between organizations (platform admins only) leaves behind whatever belongs to the old
organization and would otherwise keep reaching the device: its device groups (and with them
role assignments narrowed to those groups), owner and guest access, open invitations, and
tariffs priced for that device. Its card list is requested with the move (the charging worker
publishes it): cards of the old organization come off the charger, those of the new one go on.
History (sessions, commands, audit entries) stays where it happened.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update

from cloud.access.models import Invitation
from cloud.api.auth import current_principal
from cloud.api.errors import field_error, forbidden
from cloud.audit.service import record
from cloud.billing.models import Tariff
from cloud.db import request_session, utcnow
from cloud.devices.models import Device, device_group_members
from cloud.identity.grants import ChargerAccess
from cloud.identity.permissions import PLATFORM_ADMIN
from cloud.identity.principal import Principal
from cloud.organizations.models import Organization, Site


def check_site(site_id: int | None, organization_id: int) -> None:
    """422 on ``site_id`` unless it is null or a site of ``organization_id``."""
    if site_id is None:
        return
    site = request_session().get(Site, site_id)
    if site is None or site.organization_id != organization_id:
        field_error("site_id", "unknown site in the device's organization")


def check_organization_move(organization_id: int) -> None:
    """403 unless the caller is a platform admin; 422 on an unknown organization."""
    if not current_principal().is_platform_admin:
        forbidden(PLATFORM_ADMIN)
    if request_session().get(Organization, organization_id) is None:
        field_error("organization_id", "unknown organization")


def leave_organization(device: Device) -> dict[str, Any]:
    """Drop what ties ``device`` to its current organization; what was dropped, for the audit."""
    session = request_session()
    groups = sorted(
        session.scalars(
            select(device_group_members.c.group_id).where(
                device_group_members.c.device_id == device.id
            )
        )
    )
    session.execute(
        delete(device_group_members).where(device_group_members.c.device_id == device.id)
    )
    session.expire(device, ["groups"])
    access = sorted(
        session.scalars(select(ChargerAccess.user_id).where(ChargerAccess.device_id == device.id))
    )
    session.execute(delete(ChargerAccess).where(ChargerAccess.device_id == device.id))
    # Revoked rather than deleted: the invitation's history stays, the link stops working.
    invitations = session.execute(
        update(Invitation)
        .where(
            Invitation.device_id == device.id,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    ).rowcount  # type: ignore[attr-defined]
    tariffs = sorted(session.scalars(select(Tariff.id).where(Tariff.device_id == device.id)))
    session.execute(delete(Tariff).where(Tariff.device_id == device.id))
    return {
        "group_ids": groups,
        "access_user_ids": access,
        "invitations_revoked": invitations,
        "tariff_ids": tariffs,
    }


def record_move(
    principal: Principal,
    device: Device,
    before: int,
    diff: dict[str, Any],
    left_behind: dict[str, Any],
) -> None:
    """Audit a move between organizations three times, each telling only what its reader may
    know: the whole before/after for platform admins (an entry of no organization), what the
    device left behind for the old organization, and what changed for the new one (the old
    organization's ids blanked: they are another tenant's)."""
    session = request_session()
    everything = {**diff, **left_behind}
    record(session, principal, "device.move", "device", device.id, None, everything)
    record(session, principal, "device.move_out", "device", device.id, before, left_behind)
    foreign = ("organization_id", "site_id")
    arrived = {k: [None, v[1]] if k in foreign else v for k, v in diff.items()}
    record(
        session, principal, "device.move_in", "device", device.id, device.organization_id, arrived
    )
