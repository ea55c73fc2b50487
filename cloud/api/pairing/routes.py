"""REST resources of a charger's two codes: label sheets (/labels), the end-of-line release
(/releases), and pairing by owners (/pairings, /pairings/{device_id}, .../transfer).

Who may do what, beyond the route's named permission:

* labels and releases: a factory station (``manufacturing:release``, the ``factory-station``
  role) for the devices of the organizations where it holds it; others' devices are unknown;
* pair: any signed-in user (not an API client) holding ``devices:pair`` somewhere, or holding
  no role at all: such an account (made by an invitation, or by an admin without roles) is a
  charger user's, whose rights come from the chargers they own or are invited to. Pairing
  makes them an owner of that one charger (``ChargerAccess``), whatever organization their
  account is in; it adds no role and no organization membership;
* unpair and transfer: an owner of the charger (``devices:pair``, held through the owner role).

Refusals name the field (``charger_code``, ``box_code``, ``email``, ``device_ids``), never 5xx;
a refused pairing is still audited and counted towards the lockout (docs/pairing.md).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from flask import Response, current_app, request
from flask.views import MethodView
from sqlalchemy import select

from cloud.access import owners as access
from cloud.api.access.schemas import AccessSchema
from cloud.api.auth import SECURITY, current_principal, requires
from cloud.api.blueprint import Blueprint
from cloud.api.devices.routes import get_device
from cloud.api.errors import fail, field_error
from cloud.api.pairing.schemas import (
    MAX_LABELS,
    CodesSchema,
    LabelRequestSchema,
    PairedSchema,
    ReleasedSchema,
    TransferSchema,
)
from cloud.api.records import commit
from cloud.api.scoping import device_clause
from cloud.db import request_session
from cloud.devices.models import Device, LifecycleState
from cloud.identity.grants import ChargerAccess
from cloud.identity.models import User
from cloud.identity.passwords import SecretHasher
from cloud.manufacturing.models import BatchSerial, ProductionBatch
from cloud.pairing import PairingError, labels, service
from cloud.pairing import codes as codec
from cloud.pairing.models import ChargerCodes
from cloud.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
RELEASE = "manufacturing:release"
PAIR = "devices:pair"

labels_blp = Blueprint(
    "labels",
    __name__,
    url_prefix="/labels",
    description="Label sheets of chargers: the charger code and the box security code as QR "
    "codes with their text, PDF or PNG. Printing issues the codes.",
)
releases = Blueprint(
    "releases",
    __name__,
    url_prefix="/releases",
    description="The end of the line: both labels scanned, box and charger bound, the charger "
    "released to market.",
)
pairings = Blueprint(
    "pairings",
    __name__,
    url_prefix="/pairings",
    description="Owners pair their charger by scanning its two codes; they unpair it or hand it "
    "over to someone else.",
)


def _hasher() -> SecretHasher:
    hasher: SecretHasher = current_app.extensions["ampfleet.hasher"]
    return hasher


def _settings() -> Settings:
    settings: Settings = current_app.extensions["ampfleet.settings"]
    return settings


@labels_blp.route("", endpoint="Labels")
class Labels(MethodView):
    @requires(RELEASE)
    @labels_blp.arguments(LabelRequestSchema)
    @labels_blp.response(
        200,
        content_type="application/pdf",
        description="The label sheet: application/pdf (A4 pages) or image/png (the pages "
        "stacked), 300 dpi. Each charger has two labels: its charger code, its box code.",
    )
    @labels_blp.alt_response(409, response="CONFLICT")
    def post(self, data: dict[str, Any]) -> Response:
        """Issue the codes of provisioned devices and answer their label sheet.

        Printing issues: each device gets a new box security code (its charger code is made
        once and never changes), so a reprint voids the box label printed before (audited
        `device.codes_reprint`). The box codes exist in clear only in this answer. `format`
        (pdf or png) or else the Accept header chooses the format; PDF by default.
        """
        principal = current_principal()
        session = request_session()
        if data["batch_id"] is not None:
            wanted = _next_sheet_of(data["batch_id"])
        else:
            wanted = list(dict.fromkeys(data["device_ids"]))
        found = {
            d.id: d
            for d in session.scalars(
                select(Device).where(Device.id.in_(wanted), device_clause(RELEASE))
            )
        }
        missing = [d for d in wanted if d not in found]
        if missing:
            field_error("device_ids", f"no device of your organization: {', '.join(missing)}")
        wrong = [d for d in wanted if found[d].state is not LifecycleState.PROVISIONED]
        if wrong:
            states = ", ".join(f"{d} is {found[d].state.value}" for d in wrong)
            field_error(
                "device_ids", f"labels are printed for provisioned devices only: {states}", 409
            )
        kind = data["format"] or _negotiated()
        issued = service.issue_codes(session, wanted, actor=principal, hasher=_hasher())
        sheet = labels.render(
            [labels.Label(c.charger_code, c.box_code, c.serial) for c in issued], kind
        )
        commit()  # after the rendering: a sheet that failed issues nothing
        response = Response(sheet, mimetype=labels.FORMATS[kind])
        response.headers["Content-Disposition"] = f'attachment; filename="labels.{kind}"'
        response.headers["Cache-Control"] = "no-store"  # it holds the box codes in clear
        return response


def _next_sheet_of(batch_id: int) -> list[str]:
    """The batch's provisioned devices without labels yet, in serial order, one sheet's worth."""
    batch = request_session().get(ProductionBatch, batch_id)
    principal = current_principal()
    if batch is None or not principal.may_in(RELEASE, batch.organization_id):
        # A reference in the body: unknown (or not yours) is the field's error, as device_ids.
        field_error("batch_id", f"no production batch {batch_id} of your organization")
    device_ids = list(
        request_session().scalars(
            select(BatchSerial.device_id)
            .join(Device, Device.id == BatchSerial.device_id)
            .outerjoin(ChargerCodes, ChargerCodes.device_id == BatchSerial.device_id)
            .where(
                BatchSerial.batch_id == batch.id,
                Device.state == LifecycleState.PROVISIONED,
                ChargerCodes.device_id.is_(None),
            )
            .order_by(BatchSerial.position)
            .limit(MAX_LABELS)
        )
    )
    if not device_ids:
        field_error(
            "batch_id", "every provisioned device of this batch has its labels already", 409
        )
    return [d for d in device_ids if d is not None]


def _negotiated() -> str:
    best = request.accept_mimetypes.best_match(list(labels.FORMATS.values()))
    return "png" if best == labels.FORMATS["png"] else "pdf"


@releases.route("", endpoint="Releases")
class Releases(MethodView):
    @requires(RELEASE)
    @releases.arguments(CodesSchema)
    @releases.response(201, ReleasedSchema)
    @releases.alt_response(404, response="NOT_FOUND")
    @releases.alt_response(409, response="CONFLICT")
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Release a charger: the two scans at the end of the line.

        The box code must be the one printed for this charger (the last print): box and charger
        belong together. The device moves provisioned → released (audited `device.release`).
        A wrong box code (422, `box_code`), an unknown charger code (404, `charger_code`), a
        charger already released or not provisioned (409): nothing is written.
        """
        session = request_session()
        device = service.release(
            session,
            data["charger_code"],
            data["box_code"],
            actor=current_principal(),
            hasher=_hasher(),
            permission=RELEASE,
        )
        row = session.get(ChargerCodes, device.id)
        assert row is not None  # released through its codes
        answer = {
            "device_id": device.id,
            "serial": device.serial,
            "state": device.state.value,
            "charger_code": codec.grouped(row.charger_code),
            "released_at": row.released_at,
        }
        commit()
        return answer


def requires_pairing(func: F) -> F:
    """Route decorator of pairing: a signed-in user holding ``devices:pair`` somewhere, or
    holding no role at all (a charger user's account: see the module docstring)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        principal = current_principal()
        if principal.kind != "user":
            fail(
                403,
                message="only a signed-in user can pair a charger (it makes them its owner)",
                errors={"principal": ["a user, not an API client"]},
            )
        if principal.grants and not principal.may(PAIR):
            fail(
                403,
                message=f"this needs the permission {PAIR!r} (your roles do not give it)",
                errors={"permission": [PAIR]},
            )
        return func(*args, **kwargs)

    doc = copy.deepcopy(getattr(wrapper, "_apidoc", {}))
    manual = doc.setdefault("manual_doc", {})
    manual["security"] = copy.deepcopy(SECURITY)
    manual["x-required-permission"] = PAIR
    manual["description"] = (
        manual.get("description", "")
        + f"\n\nRequires the permission `{PAIR}`, or an account with no role at all (a charger "
        "user's); API clients cannot pair."
    ).strip()
    responses = doc.setdefault("response", {}).setdefault("responses", {})
    responses.setdefault(401, []).append("UNAUTHORIZED")
    responses.setdefault(403, []).append("FORBIDDEN")
    wrapper._apidoc = doc  # type: ignore[attr-defined]
    wrapper.required_permission = PAIR  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


@pairings.route("", endpoint="Pairings")
class Pairings(MethodView):
    @requires_pairing
    @pairings.arguments(CodesSchema)
    @pairings.response(201, PairedSchema)
    @pairings.alt_response(404, response="NOT_FOUND")
    @pairings.alt_response(409, response="CONFLICT")
    @pairings.alt_response(429, response="TOO_MANY_REQUESTS")
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Pair a charger: scan the code on the charger and the code in its box; you become
        its owner.

        The box code pairs once (409 `box_code` when used; a factory reset of the charger
        re-arms it); a charger with an owner already, or not released yet, is refused (409
        `charger_code`). Five wrong box codes for one charger, or from one account, within
        the lockout period lock it out for that period (429 with Retry-After; setting
        `AMPFLEET_PAIRING_LOCKOUT`). Every attempt is audited (`pairing.attempt`), never with
        the box code.
        """
        principal = current_principal()
        session = request_session()
        try:
            done = service.pair(
                session,
                data["charger_code"],
                data["box_code"],
                user=principal,
                hasher=_hasher(),
                lockout=_settings().pairing_lockout,
            )
        except PairingError:
            commit()  # the attempt's audit entry and the failure counted, nothing else
            raise
        answer = {
            "device_id": done.device.id,
            "device_name": done.device.name,
            "level": done.access.level.value,
            "user_id": principal.id,
            "paired_at": done.at,
        }
        commit()
        return answer


def _owned_device(device_id: str) -> Device:
    return get_device(device_id, "devices:read")


def _not_owner() -> NoReturn:
    raise PairingError("not_owner", "you do not own this charger", None)


@pairings.route("/<string(maxlength=64):device_id>", endpoint="Pairing")
class Pairing(MethodView):
    @requires(PAIR)
    @pairings.response(204)
    def delete(self, device_id: str) -> None:
        """Unpair: give the charger up (its owners only).

        Your owner access goes; when you were its last owner, its guests and pending
        invitations go too. Its box code stays used: to pair it again, factory-reset the
        charger (docs/pairing.md).
        """
        device = _owned_device(device_id)
        service.unpair(request_session(), device, user=current_principal())
        commit()


@pairings.route("/<string(maxlength=64):device_id>/transfer", endpoint="Transfer")
class Transfer(MethodView):
    @requires(PAIR)
    @pairings.arguments(TransferSchema)
    @pairings.response(200, AccessSchema)
    def post(self, data: dict[str, Any], device_id: str) -> ChargerAccess:
        """Hand the charger over to another account (its owners only): every owner and guest of
        it goes, you included, its pending invitations are revoked, and the receiver becomes
        its one owner. No code is needed again."""
        device = _owned_device(device_id)
        if not access.is_owner(current_principal(), device):
            _not_owner()
        session = request_session()
        email = data["email"].strip().lower()
        to = session.scalar(select(User).where(User.email == email))
        if to is None:
            field_error(
                "email",
                "no account has this e-mail: invite them as a co-owner instead "
                f"(POST /devices/{device.id}/invitations), then unpair",
            )
        granted, _ = service.transfer(session, device, user=current_principal(), to=to)
        commit()
        return granted
