"""REST resources: /batches, /mac-pools, /enrollment, /quarantine, /devices/{id}/approve.

Domain refusals (``cloud.manufacturing``) propagate and are answered by ``cloud.api.errors``;
each leaves the request's session uncommitted, so a refused enrollment writes nothing.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, url_for
from flask.views import MethodView
from sqlalchemy import Select, false, select

from cloud.access import guestpass
from cloud.api.auth import current_principal, requires
from cloud.api.blueprint import Blueprint
from cloud.api.devices.broker_sync import refresh_broker
from cloud.api.devices.schemas import DeviceSchema
from cloud.api.manufacturing.schemas import (
    BatchCreateSchema,
    BatchSchema,
    EnrolledSchema,
    EnrollmentSchema,
    MacPoolCreateSchema,
    MacPoolSchema,
    SerialQuerySchema,
    SerialSchema,
)
from cloud.api.records import commit
from cloud.api.scoping import get_scoped, org_clause, target_org
from cloud.db import request_session
from cloud.devices.models import Device
from cloud.manufacturing import ManufacturingError, approval, batches, enrollment, macpool
from cloud.manufacturing.enrollment import CsrSigner
from cloud.manufacturing.models import BatchSerial, BatchState, MacPool, ProductionBatch
from cloud.manufacturing.signing import pki_signer
from cloud.settings import Settings

batches_blp = Blueprint(
    "batches",
    __name__,
    url_prefix="/batches",
    description="Production batches: the factory whitelist, created by one admin and approved "
    "by another.",
)
mac_pools = Blueprint(
    "mac_pools",
    __name__,
    url_prefix="/mac-pools",
    description="MAC address pools (OUI blocks) that enrollment assigns from.",
)
enrollment_blp = Blueprint(
    "enrollment",
    __name__,
    url_prefix="/enrollment",
    description="Enrollment of a board by a factory station: CSR signed, MAC assigned.",
)
quarantine_blp = Blueprint(
    "quarantine",
    __name__,
    url_prefix="/quarantine",
    description="Devices in quarantine: connected but not approved, or hardware changed.",
)
device_approval = Blueprint(
    "device_approval",
    __name__,
    url_prefix="/devices",
    description="Approving a device by hand (out of quarantine).",
)

SIGNER = "ampfleet.csr_signer"


def _settings() -> Settings:
    settings: Settings = current_app.extensions["ampfleet.settings"]
    return settings


def csr_signer() -> CsrSigner:
    """The app's CSR signer: the platform PKI, made on first use (a test may set its own)."""
    signer: CsrSigner | None = current_app.extensions.get(SIGNER)
    if signer is None:
        signer = pki_signer(_settings())
        current_app.extensions[SIGNER] = signer
    return signer


@batches_blp.route("")
class Batches(MethodView):
    @requires("manufacturing:read")
    @batches_blp.response(200, BatchSchema(many=True))
    @batches_blp.paginated()
    def get(self) -> Select[Any]:
        """List production batches, newest first."""
        return (
            select(ProductionBatch)
            .where(org_clause(ProductionBatch.organization_id, "manufacturing:read"))
            .order_by(ProductionBatch.id.desc())
        )

    @requires("manufacturing:write")
    @batches_blp.arguments(BatchCreateSchema)
    @batches_blp.response(201, BatchSchema)
    def post(self, data: dict[str, Any]) -> ProductionBatch:
        """Create a production batch (pending until another admin approves it).

        Serials as `serial_range` (`prefix` + `first`..`last`, zero-padded to `digits`) or an
        explicit `serials` list; `count` must match. A serial becomes the enrolled device's id.
        `expected` gives, per serial, the hardware IDs the board must show at enrollment.
        """
        organization_id = target_org(data["organization_id"], "manufacturing:write")
        spec = data["serial_range"]
        request = batches.NewBatch(
            organization_id=organization_id,
            hardware_family=data["hardware_family"],
            count=data["count"],
            serials=data["serials"],
            serial_range=batches.SerialRange(**spec) if spec is not None else None,
            expected=[
                batches.Expected(
                    e["serial"],
                    e["chip_id"],
                    tuple(e["slave_ids"]) if e["slave_ids"] is not None else None,
                )
                for e in data["expected"]
            ],
            note=data["note"],
        )
        batch = batches.create(request_session(), request, current_principal())
        commit()
        return batch


@batches_blp.route("/<id:batch_id>", endpoint="Batch")
class BatchItem(MethodView):
    @requires("manufacturing:read")
    @batches_blp.response(200, BatchSchema)
    def get(self, batch_id: int) -> ProductionBatch:
        """Read a production batch."""
        return get_scoped(ProductionBatch, batch_id, "manufacturing:read", "batch")


@batches_blp.route("/<id:batch_id>/approve", endpoint="Approve")
class BatchApproval(MethodView):
    @requires("manufacturing:approve")
    @batches_blp.response(200, BatchSchema)
    def post(self, batch_id: int) -> ProductionBatch:
        """Approve a pending batch: its serials may enroll. Its creator may not (four eyes)."""
        batch = get_scoped(
            ProductionBatch,
            batch_id,
            "manufacturing:approve",
            "batch",
            read="manufacturing:read",
        )
        batches.approve(request_session(), batch, current_principal())
        commit()
        return batch


@batches_blp.route("/<id:batch_id>/serials", endpoint="Serials")
class BatchSerials(MethodView):
    @requires("manufacturing:read")
    @batches_blp.arguments(SerialQuerySchema, location="query")
    @batches_blp.response(200, SerialSchema(many=True))
    @batches_blp.paginated()
    def get(self, query: dict[str, Any], batch_id: int) -> Select[Any]:
        """The batch's serials in order, each `pending`, `approved` or `enrolled`."""
        batch = get_scoped(ProductionBatch, batch_id, "manufacturing:read", "batch")
        stmt = select(BatchSerial).where(BatchSerial.batch_id == batch.id)
        state = query.get("state")
        if state == "enrolled":
            stmt = stmt.where(BatchSerial.enrolled_at.is_not(None))
        elif state is not None:
            stmt = stmt.where(BatchSerial.enrolled_at.is_(None))
            if (batch.state is BatchState.APPROVED) != (state == "approved"):
                stmt = stmt.where(false())  # the batch's serials are all in the other state
        return stmt.order_by(BatchSerial.position)


@mac_pools.route("")
class MacPools(MethodView):
    @requires("manufacturing:read")
    @mac_pools.response(200, MacPoolSchema(many=True))
    @mac_pools.paginated()
    def get(self) -> Select[Any]:
        """List MAC pools, oldest (first used) first."""
        return (
            select(MacPool)
            .where(org_clause(MacPool.organization_id, "manufacturing:read"))
            .order_by(MacPool.id)
        )

    @requires("manufacturing:write")
    @mac_pools.arguments(MacPoolCreateSchema)
    @mac_pools.response(201, MacPoolSchema)
    def post(self, data: dict[str, Any]) -> MacPool:
        """Define a MAC pool: `first` + `size`, or `first`..`last` (at most an OUI block,
        2^24 addresses). A range overlapping any pool is refused."""
        organization_id = target_org(data["organization_id"], "manufacturing:write")
        pool = macpool.create(
            request_session(),
            organization_id,
            data["name"],
            data["first"],
            data["last"],
            data["size"],
            current_principal(),
        )
        commit()
        return pool


@mac_pools.route("/<id:pool_id>", endpoint="MacPool")
class MacPoolItem(MethodView):
    @requires("manufacturing:read")
    @mac_pools.response(200, MacPoolSchema)
    def get(self, pool_id: int) -> MacPool:
        """Read a MAC pool."""
        return get_scoped(MacPool, pool_id, "manufacturing:read", "MAC pool")


@enrollment_blp.route("")
class Enrollment(MethodView):
    @requires("manufacturing:enroll")
    @enrollment_blp.arguments(EnrollmentSchema)
    @enrollment_blp.response(201, EnrolledSchema)
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Enroll one board: the device is created in its batch's organization and moved
        manufactured -> provisioned, its CSR signed (CN = the serial = the device id), its
        hardware IDs recorded, a MAC assigned (or the chip's own recorded). Every refusal
        writes nothing."""
        principal = current_principal()
        session = request_session()
        try:
            done = enrollment.enroll(
                session,
                enrollment.Enrollment(
                    data["serial"], data["csr"], data["chip_id"], data["slave_ids"], data["mac"]
                ),
                principal,
                csr_signer(),
                lambda org: principal.may_in("manufacturing:enroll", org),
                _settings().factory_firmware,
            )
        except ManufacturingError as refused:
            enrollment.ENROLLMENTS.labels(refused.reason).inc()
            raise
        enrollment.ENROLLMENTS.labels("enrolled").inc()
        # The charger checks guest credentials offline with these (made on first use).
        guest_keys = guestpass.nvs_record(session, _settings())
        commit()
        device = done.device
        # Its certificate is its broker account (Mosquitto: a dynamic-security client + role).
        refresh_broker("enrollment", device.id)
        return {
            "device_id": device.id,
            "serial": device.serial,
            "organization_id": device.organization_id,
            "hardware_family": device.hardware_family,
            "state": device.state.value,
            "mac": device.mac,
            "certificate": done.certificate.certificate_pem,
            "certificate_chain": done.certificate.chain_pem,
            "certificate_serial": done.certificate.serial,
            "not_after": done.certificate.not_after,
            "ca_chain": done.ca_chain_pem,
            "firmware": {
                "version": done.firmware_version,
                "bundle": f"firmware-{done.firmware_version}.tar.gz",
            },
            "guest_keys": guest_keys.decode(),
            "links_": {"device": {"href": url_for("devices.Device", device_id=device.id)}},
        }


@quarantine_blp.route("")
class Quarantine(MethodView):
    @requires("manufacturing:read")
    @quarantine_blp.response(200, DeviceSchema(many=True))
    @quarantine_blp.paginated()
    def get(self) -> Select[Any]:
        """Devices in quarantine (longest first), with why: each may only publish its status
        until approved (`POST /devices/{id}/approve`)."""
        return (
            select(Device)
            .where(
                Device.quarantine_reason.is_not(None),
                org_clause(Device.organization_id, "manufacturing:read"),
            )
            .order_by(Device.quarantined_at, Device.id)
        )


@device_approval.route("/<string(maxlength=64):device_id>/approve", endpoint="ApproveDevice")
class DeviceApproval(MethodView):
    @requires("manufacturing:approve")
    @device_approval.response(200, DeviceSchema)
    def post(self, device_id: str) -> Device:
        """Approve a device and release it from quarantine. Out of a hardware quarantine (a
        repaired board) the hardware IDs it last announced become its enrolled set."""
        device = get_scoped(
            Device, device_id, "manufacturing:approve", "device", read="manufacturing:read"
        )
        approval.approve_device(request_session(), device, current_principal())
        commit()
        # Full rights now; disconnected so that it reconnects and subscribes under them.
        refresh_broker("approval", device.id, kick=True)
        return device
