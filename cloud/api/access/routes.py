"""REST resources: a charger's owners and guests (/devices/{id}/access), invitations
(/devices/{id}/invitations, /invitations/{id}) and accepting them (/invitations/{id}/accept).

Who may do what, beyond the route's named permission:

* see who may use a charger (its access list and invitations): its owners, and whoever reads the
  charger through a role (``devices:read``); a guest does not learn who else uses it;
* invite, remove access, revoke invitations: its owners, and holders of ``users:write`` in its
  organization (403 naming ``users:write`` otherwise);
* accept: whoever holds the invitation's secret (a public route; failed secrets are counted per
  invitation and per client address, and answered 429 past the limits).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Any, NoReturn

from flask import current_app, request
from flask.views import MethodView
from sqlalchemy import Select, select

from cloud.access import invitations, outbox
from cloud.access import owners as access
from cloud.access.invitations import InvitationState
from cloud.access.models import Invitation
from cloud.api.access.schemas import (
    AcceptSchema,
    AccessQuerySchema,
    AccessSchema,
    InvitationPreviewSchema,
    InvitationQuerySchema,
    InvitationRequestSchema,
    InvitationSchema,
    SecretQuerySchema,
)
from cloud.api.auth import current_principal, requires
from cloud.api.blueprint import Blueprint
from cloud.api.devices.routes import get_device
from cloud.api.errors import fail, field_error, not_found
from cloud.api.records import commit
from cloud.api.scoping import device_clause
from cloud.audit.service import record
from cloud.db import request_session, utcnow
from cloud.devices.models import Device
from cloud.identity.grants import AccessLevel, ChargerAccess
from cloud.identity.models import User
from cloud.identity.passwords import SecretHasher
from cloud.identity.principal import Principal
from cloud.mail import MailAddressError, MailError
from cloud.mail.backends import app_mailer
from cloud.settings import Settings

log = logging.getLogger(__name__)

GUARD = "ampfleet.invitation_guard"  # app.extensions key of the SecretGuard

charger_access = Blueprint(
    "charger_access",
    __name__,
    url_prefix="/devices",
    description="Who may use a charger: its owners and guests, and the invitations sent to them.",
)
invitations_blp = Blueprint(
    "invitations",
    __name__,
    url_prefix="/invitations",
    description="Invitations to own or use a charger: read, revoke, and accept with the secret "
    "of the e-mailed link.",
)


def _hasher() -> SecretHasher:
    hasher: SecretHasher = current_app.extensions["ampfleet.hasher"]
    return hasher


def _settings() -> Settings:
    settings: Settings = current_app.extensions["ampfleet.settings"]
    return settings


def guard() -> invitations.SecretGuard:
    """The app's counter of failed invitation secrets (made on first use: per process)."""
    found: invitations.SecretGuard | None = current_app.extensions.get(GUARD)
    if found is None:
        found = current_app.extensions[GUARD] = invitations.SecretGuard()
    return found


def _may_not_manage() -> NoReturn:
    fail(
        403,
        message="only an owner of this charger, or a holder of 'users:write' in its "
        "organization, may do this",
        errors={"permission": ["users:write"]},
    )


def _may_not_see() -> NoReturn:
    fail(
        403,
        message="only an owner of this charger, or a holder of 'devices:read' through a role, "
        "sees who may use it",
        errors={"permission": ["devices:read"]},
    )


def _visible_device(device_id: str) -> Device | None:
    return request_session().scalar(
        select(Device).where(Device.id == device_id, device_clause("devices:read"))
    )


def _managed_device(device_id: str) -> Device:
    device = get_device(device_id, "devices:read")
    if not access.may_manage(current_principal(), device):
        _may_not_manage()
    return device


def _user_id(principal: Principal) -> int | None:
    return principal.id if principal.kind == "user" else None


def _request_lists(user_id: int) -> None:
    """Before the commit of an access change: the charging worker republishes the lists."""
    outbox.request_for_user(request_session(), user_id)


@charger_access.route("/<string(maxlength=64):device_id>/access", endpoint="AccessList")
class AccessList(MethodView):
    @requires("devices:read")
    @charger_access.arguments(AccessQuerySchema, location="query")
    @charger_access.response(200, AccessSchema(many=True))
    @charger_access.paginated()
    def get(self, query: dict[str, Any], device_id: str) -> Select[Any]:
        """The charger's owners and guests (guests with their window and whether it holds now).

        Its owners see it, and whoever reads the charger through a role.
        """
        device = get_device(device_id, "devices:read")
        if not access.may_see(current_principal(), device):
            _may_not_see()
        stmt = select(ChargerAccess).where(ChargerAccess.device_id == device.id)
        if "level" in query:
            stmt = stmt.where(ChargerAccess.level == AccessLevel(query["level"]))
        return stmt.order_by(ChargerAccess.id)


@charger_access.route("/<string(maxlength=64):device_id>/access/<id:user_id>", endpoint="Access")
class AccessItem(MethodView):
    @requires("devices:read")
    @charger_access.etag
    @charger_access.response(200, AccessSchema)
    def get(self, device_id: str, user_id: int) -> ChargerAccess:
        """One user's access to the charger (the user themselves may read it too)."""
        principal = current_principal()
        device = get_device(device_id, "devices:read")
        if not (access.may_see(principal, device) or _user_id(principal) == user_id):
            _may_not_see()
        row = access.find(request_session(), device.id, user_id)
        if row is None:
            not_found("access")
        return row

    @requires("devices:read")
    @charger_access.etag
    @charger_access.response(204)
    def delete(self, device_id: str, user_id: int) -> None:
        """Remove a user's access: its owners and holders of `users:write` may, and a user may
        give up their own. The charger's local authorization list follows."""
        principal = current_principal()
        device = get_device(device_id, "devices:read")
        if not (access.may_manage(principal, device) or _user_id(principal) == user_id):
            _may_not_manage()
        session = request_session()
        row = access.find(session, device.id, user_id)
        if row is None:
            not_found("access")
        charger_access.check_etag(row, AccessSchema)
        record(
            session,
            principal,
            "charger_access.revoke",
            "device",
            device.id,
            device.organization_id,
            access.describe(row),
        )
        session.delete(row)
        _request_lists(user_id)
        commit()


@charger_access.route("/<string(maxlength=64):device_id>/invitations", endpoint="DeviceInvitations")
class DeviceInvitations(MethodView):
    @requires("devices:read")
    @charger_access.arguments(InvitationQuerySchema, location="query")
    @charger_access.response(200, InvitationSchema(many=True))
    @charger_access.paginated()
    def get(self, query: dict[str, Any], device_id: str) -> Select[Any]:
        """The charger's invitations, newest first (same readers as its access list)."""
        device = get_device(device_id, "devices:read")
        if not access.may_see(current_principal(), device):
            _may_not_see()
        stmt = select(Invitation).where(Invitation.device_id == device.id)
        wanted = query.get("state")
        now = dt.datetime.now(dt.UTC)
        if wanted == InvitationState.REVOKED:
            stmt = stmt.where(Invitation.revoked_at.is_not(None))
        elif wanted == InvitationState.ACCEPTED:
            stmt = stmt.where(Invitation.revoked_at.is_(None), Invitation.accepted_at.is_not(None))
        elif wanted is not None:
            stmt = stmt.where(Invitation.revoked_at.is_(None), Invitation.accepted_at.is_(None))
            stmt = stmt.where(
                Invitation.expires_at <= now
                if wanted == InvitationState.EXPIRED
                else Invitation.expires_at > now
            )
        return stmt.order_by(Invitation.created_at.desc(), Invitation.id)

    @requires("devices:read")
    @charger_access.arguments(InvitationRequestSchema)
    @charger_access.response(201, InvitationSchema)
    def post(self, data: dict[str, Any], device_id: str) -> Invitation:
        """Invite someone by e-mail to co-own the charger or to charge at it as a guest.

        Its owners and holders of `users:write` in its organization may. The e-mail carries the
        accept link (with the secret, which nobody else ever sees); a guest's `valid_from` and
        `valid_until` bound when they may charge. 503 when the mail cannot be sent (nothing is
        then stored).
        """
        principal = current_principal()
        device = _managed_device(device_id)
        session = request_session()
        level = AccessLevel(data["level"])
        email = data["email"].strip().lower()
        existing = invitations.account_for(session, email)
        if existing is not None:
            row = access.find(session, device.id, existing.id)
            if row is not None and row.level is AccessLevel.OWNER:
                field_error("email", "is already an owner of this charger", status=409)
        settings = _settings()
        expires_at = data["expires_at"] or utcnow() + dt.timedelta(seconds=settings.invitation_ttl)
        invitation, secret = invitations.create(
            session,
            _hasher(),
            device,
            email,
            level,
            data["valid_from"],
            data["valid_until"],
            expires_at,
            _user_id(principal),
        )
        record(
            session,
            principal,
            "invitation.create",
            "invitation",
            invitation.id,
            device.organization_id,
            {
                "device_id": device.id,
                "email": email,
                "level": level.value,
                "valid_from": data["valid_from"] and data["valid_from"].isoformat(),
                "valid_until": data["valid_until"] and data["valid_until"].isoformat(),
                "expires_at": expires_at.isoformat(),
            },
        )
        inviter = session.get(User, principal.id) if principal.kind == "user" else None
        name = f"{inviter.name} ({inviter.email})" if inviter and inviter.name else principal.name
        mail = invitations.invitation_mail(invitation, secret, device, name, settings.public_url)
        try:
            app_mailer().send(mail)
        except MailAddressError as exc:
            field_error("email", f"cannot be mailed: {exc}")
        except MailError as exc:
            # Nothing is stored: the secret exists only in the mail that could not be sent.
            log.warning("invitation %s to %s not sent: %s", invitation.id, email, exc)
            fail(503, message="the invitation e-mail could not be sent; retry later")
        commit()
        return invitation


def _invitation_in_scope(invitation_id: str) -> tuple[Invitation, Device]:
    invitation = request_session().get(Invitation, invitation_id)
    device = _visible_device(invitation.device_id) if invitation else None
    if invitation is None or device is None:
        not_found("invitation")
    return invitation, device


@invitations_blp.route("/<string(maxlength=32):invitation_id>", endpoint="Invitation")
class InvitationItem(MethodView):
    @requires("devices:read")
    @invitations_blp.etag
    @invitations_blp.response(200, InvitationSchema)
    def get(self, invitation_id: str) -> Invitation:
        """An invitation: to whom, which level, its state (never its secret)."""
        invitation, device = _invitation_in_scope(invitation_id)
        if not access.may_see(current_principal(), device):
            _may_not_see()
        return invitation

    @requires("devices:read")
    @invitations_blp.etag
    @invitations_blp.response(204)
    @invitations_blp.alt_response(410, response="GONE")
    def delete(self, invitation_id: str) -> None:
        """Revoke a pending invitation (its charger's owners and holders of `users:write`):
        its link stops working. 409 once accepted (remove the access instead), 410 if revoked."""
        principal = current_principal()
        invitation, device = _invitation_in_scope(invitation_id)
        if not access.may_manage(principal, device):
            _may_not_manage()
        invitations_blp.check_etag(invitation, InvitationSchema)
        if invitation.revoked_at is not None:
            fail(
                410,
                message="the invitation was already revoked",
                errors={"invitation": ["revoked"]},
            )
        if invitation.accepted_at is not None:
            fail(
                409,
                message="the invitation was already accepted; remove the access instead",
                errors={"invitation": ["accepted"]},
            )
        invitation.revoked_at = utcnow()
        record(
            request_session(),
            principal,
            "invitation.revoke",
            "invitation",
            invitation.id,
            device.organization_id,
            {"device_id": device.id, "email": invitation.email},
        )
        commit()


def _verified(invitation_id: str, secret: str, location: str, lock: bool) -> Invitation:
    """The invitation whose secret this is; 404 otherwise, 429 after too many failures.

    The check costs one KDF verification whether the id exists or not, and unknown id and wrong
    secret answer alike, so neither timing nor status tells which invitations exist.
    """
    address = request.remote_addr or "unknown"
    wait = guard().retry_after(invitation_id, address)
    if wait > 0:
        fail(
            429,
            message="too many wrong secrets for this invitation or from your address; retry later",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    stmt = select(Invitation).where(Invitation.id == invitation_id)
    if lock:
        # Two accepts racing with one secret: the second waits here, then finds it accepted.
        stmt = stmt.with_for_update()
    invitation = request_session().scalar(stmt)
    if not _hasher().verify(invitation.secret_hash if invitation else None, secret):
        guard().failed(invitation_id, address)
        message = "no invitation has this id and secret"
        fail(404, message=message, errors={location: {"secret": [message]}})
    assert invitation is not None  # verify() is False without a stored hash
    return invitation


@invitations_blp.route("/<string(maxlength=32):invitation_id>/accept", endpoint="Accept")
class Accept(MethodView):
    @invitations_blp.arguments(SecretQuerySchema, location="query")
    @invitations_blp.response(200, InvitationPreviewSchema)
    @invitations_blp.alt_response(404, response="NOT_FOUND")
    @invitations_blp.alt_response(409, response="CONFLICT")
    @invitations_blp.alt_response(410, response="GONE")
    @invitations_blp.alt_response(429, response="TOO_MANY_REQUESTS")
    def get(self, query: dict[str, Any], invitation_id: str) -> dict[str, Any]:
        """What the invitation offers (the e-mailed link opens this).

        Public route: the `secret` of the link is the credential. 410 when it expired or was
        revoked, 409 when it was already accepted.
        """
        invitation = _verified(invitation_id, query["secret"], "query", lock=False)
        invitations.check_open(invitation, dt.datetime.now(dt.UTC))  # 409/410: cloud.api.errors
        session = request_session()
        device = session.get(Device, invitation.device_id)
        assert device is not None  # the invitation goes with its device (ON DELETE CASCADE)
        return {
            "id": invitation.id,
            "device_id": device.id,
            "device_name": device.name,
            "email": invitation.email,
            "level": invitation.level.value,
            "valid_from": invitation.valid_from,
            "valid_until": invitation.valid_until,
            "expires_at": invitation.expires_at,
            "account_exists": invitations.account_for(session, invitation.email) is not None,
        }

    @invitations_blp.arguments(AcceptSchema)
    @invitations_blp.response(200, AccessSchema)
    @invitations_blp.alt_response(404, response="NOT_FOUND")
    @invitations_blp.alt_response(409, response="CONFLICT")
    @invitations_blp.alt_response(410, response="GONE")
    @invitations_blp.alt_response(429, response="TOO_MANY_REQUESTS")
    def post(self, data: dict[str, Any], invitation_id: str) -> ChargerAccess:
        """Accept the invitation: you become an owner or a guest of the charger.

        Public route: the `secret` of the e-mailed link is the credential. Without an account
        for the invited e-mail, one is made in the charger's organization with your `name` and
        `password` (it holds no role: its rights are the charger's access); with one, the access
        is added to it (sign in as usual). 410 when the invitation expired or was revoked, 409
        when it was already accepted.
        """
        session = request_session()
        invitation = _verified(invitation_id, data["secret"], "json", lock=True)
        now = utcnow()
        device = session.get(Device, invitation.device_id)
        assert device is not None  # the invitation goes with its device (ON DELETE CASCADE)
        # InvitationError propagates: cloud.api.errors answers 409, 410 or 422.
        invitations.check_open(invitation, dt.datetime.now(dt.UTC))
        done = invitations.accept(
            session, _hasher(), invitation, device, data["name"], data["password"], now
        )
        user = done.user
        actor = Principal("user", user.id, user.email, user.organization_id, ())
        if done.user_created:
            record(
                session,
                actor,
                "user.create",
                "user",
                user.id,
                user.organization_id,
                {"email": user.email, "roles": [], "invitation_id": invitation.id},
            )
        record(
            session,
            actor,
            "invitation.accept",
            "invitation",
            invitation.id,
            device.organization_id,
            {"device_id": device.id, "level": invitation.level.value, "user_id": user.id},
        )
        if done.changes:
            record(
                session,
                actor,
                "charger_access.grant",
                "device",
                device.id,
                device.organization_id,
                {**access.describe(done.access), "changes": done.changes},
            )
        _request_lists(user.id)
        commit()
        return done.access
