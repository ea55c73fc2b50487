"""Requests to republish chargers' local authorization lists: the API asks, a worker publishes.

The API never publishes a list itself: a request must not wait for a broker, and one MQTT
connection per charger per request does not scale to an organization of thousands. A change
that may alter lists (a card, an access row, a user deactivated or deleted, a role assigned,
taken or edited) writes a request per affected charger in its own transaction (``request_*``):
committed with the change or not at all. The charging worker takes requests in batches
(``publish_requested``), recomputes and publishes the lists over its one connection
(``cloud.access.authlists``: retained, QoS 1, every PUBACK awaited), and deletes what it
handled; requests left when no worker ran are taken by the next one on its start.

A request is one row per charger with a generation: asking again bumps it, and the worker
deletes a row only at the generation it read, so a change committed while it computed is
recomputed on the next pass rather than lost.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import delete, func, insert, select, tuple_, update
from sqlalchemy.orm import Session

from cloud.access.authlists import (
    CHARGE,
    AuthListPublisher,
    chunks,
    refresh_authorization_lists,
)
from cloud.access.models import AuthorizationListRequest as Request
from cloud.db import utcnow
from cloud.devices.models import Device
from cloud.identity.grants import AccessLevel, ChargerAccess
from cloud.identity.models import Role, RoleAssignment, User

BATCH = 500  # chargers taken per pass (their lists are computed per organization, in bulk)
MAX_BATCHES = 20  # per call: a worker that is asked faster than it publishes still returns


def request_lists(session: Session, device_ids: Iterable[str]) -> None:
    """Ask for the lists of ``device_ids`` to be recomputed and republished (not committed:
    the caller commits the request with its change)."""
    now = utcnow()
    for chunk in chunks(sorted(set(device_ids))):
        # Insert what is missing, then bump every row: a row the worker is handling gets a new
        # generation, so the worker's delete (at the generation it read) leaves it. The insert
        # comes first so that a row the worker deletes meanwhile cannot swallow the request.
        session.execute(
            insert(Request)
            .prefix_with("OR IGNORE", dialect="sqlite")
            .prefix_with("IGNORE", dialect="mysql")
            .prefix_with("IGNORE", dialect="mariadb")
            .values([{"device_id": d, "generation": 0, "requested_at": now} for d in chunk])
        )
        session.execute(
            update(Request)
            .where(Request.device_id.in_(chunk))
            .values(generation=Request.generation + 1)
        )


def request_for_organization(session: Session, organization_id: int) -> None:
    """Ask for the lists of every charger of the organization."""
    request_lists(
        session, session.scalars(select(Device.id).where(Device.organization_id == organization_id))
    )


def request_for_user(session: Session, user_id: int) -> None:
    """Ask for the lists a change to the user's cards or rights may touch: every charger of the
    user's organization (a right just lost must take the cards off chargers the user no longer
    reaches; only lists whose content changed are published)."""
    user = session.get(User, user_id)
    if user is not None:
        request_for_organization(session, user.organization_id)


def request_for_role(session: Session, role: Role) -> None:
    """Ask for the lists a change of ``role`` (its permissions, or its deletion) may touch:
    the organizations of the users holding it, and for the owner and guest system roles (what
    a ChargerAccess row grants) every organization with such rows."""
    organizations = set(
        session.scalars(
            select(User.organization_id)
            .join(RoleAssignment, RoleAssignment.user_id == User.id)
            .where(RoleAssignment.role_id == role.id)
            .distinct()
        )
    )
    if role.organization_id is None and role.name in {level.value for level in AccessLevel}:
        organizations |= set(
            session.scalars(
                select(Device.organization_id)
                .join(ChargerAccess, ChargerAccess.device_id == Device.id)
                .distinct()
            )
        )
    for organization_id in sorted(organizations):
        request_for_organization(session, organization_id)


def touches_charging(before: Iterable[str], after: Iterable[str]) -> bool:
    """True when a role edit gives or takes ``charging:start`` (the right the lists follow)."""
    return (CHARGE in set(before)) != (CHARGE in set(after))


def pending(session: Session) -> int:
    """How many chargers wait for their list."""
    return session.scalar(select(func.count()).select_from(Request)) or 0


def publish_requested(
    session: Session, publisher: AuthListPublisher, *, at: dt.datetime | None = None
) -> list[str]:
    """Recompute and publish the requested lists, ``BATCH`` chargers at a time, and delete the
    requests handled; the ids published (a list whose content did not change is not sent
    again). A list the broker did not take stays unpublished for ``authlists.sweep``.
    Commits ``session``."""
    published: list[str] = []
    for _ in range(MAX_BATCHES):
        # Read first: on MariaDB the snapshot then holds every change whose request we read.
        taken = session.execute(
            select(Request.device_id, Request.generation)
            .order_by(Request.requested_at, Request.device_id)
            .limit(BATCH)
        ).all()
        if not taken:
            break
        published += refresh_authorization_lists(
            session, [device_id for device_id, _ in taken], publisher, at=at
        )
        # One statement per chunk, in key order like the API's requests: no deadlock between
        # them on MariaDB. A row asked for again since has another generation and stays.
        handled = sorted((device_id, generation) for device_id, generation in taken)
        for chunk in chunks(handled):
            session.execute(
                delete(Request).where(tuple_(Request.device_id, Request.generation).in_(chunk))
            )
        session.commit()
        if len(taken) < BATCH:
            break
    else:
        session.commit()
    return sorted(set(published))
