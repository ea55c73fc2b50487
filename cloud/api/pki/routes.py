"""REST resources: /certificates (the certificates issued to devices, their revocation),
/devices/{id}/certificates (signing a device's CSR, re-certifying its key), and the public
/pki/ca.pem, /pki/crl and /pki/crl.pem that brokers and devices fetch.

A caller sees the certificates of the devices it may see with the permission at hand
(``devices`` scoping: org-wide, site, group); others answer 404. A platform admin also sees
the certificates of deleted devices (kept for the CRL).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flask import Response, current_app
from flask.views import MethodView
from sqlalchemy import ColumnElement, Select, select, true

from cloud.api.auth import current_principal, requires
from cloud.api.blueprint import Blueprint
from cloud.api.devices.broker_sync import refresh_broker
from cloud.api.devices.routes import get_device
from cloud.api.errors import forbidden, not_found
from cloud.api.pki.schemas import (
    CertificateQuerySchema,
    CertificateSchema,
    CsrSchema,
    IssuedSchema,
    RevocationSchema,
)
from cloud.api.records import commit
from cloud.api.scoping import device_clause
from cloud.db import request_session
from cloud.devices.models import Device
from cloud.pki import crl, normalize_serial, service
from cloud.pki.models import DeviceCertificate
from cloud.settings import Settings

READ = "certificates:read"
REVOKE = "certificates:revoke"
SIGN = "devices:credentials"

certificates = Blueprint(
    "certificates",
    __name__,
    url_prefix="/certificates",
    description="Certificates issued to devices by the platform PKI: list, read, revoke.",
)
device_certificates = Blueprint(
    "device_certificates",
    __name__,
    url_prefix="/devices",
    description="Signing a device's CSR with the platform PKI, re-certifying its key.",
)
pki = Blueprint(
    "pki",
    __name__,
    url_prefix="/pki",
    description="The platform PKI's public files: the CA chain and the CRL (no token needed).",
)


def _settings() -> Settings:
    settings: Settings = current_app.extensions["ampfleet.settings"]
    return settings


def _visible(permission: str) -> ColumnElement[bool]:
    """SQL condition: the certificate's device is one the caller may ``permission``."""
    if current_principal().scope(permission).orgs is None:
        return true()  # platform-wide, deleted devices' certificates included
    return DeviceCertificate.device_id.in_(select(Device.id).where(device_clause(permission)))


def _certificate(serial: str, permission: str) -> DeviceCertificate:
    """The certificate ``serial`` where ``permission`` holds; 404 if unseen, 403 if seen only
    with certificates:read."""
    normal = normalize_serial(serial)
    if normal is None:
        not_found("certificate")
    session = request_session()
    found = session.scalar(
        select(DeviceCertificate).where(DeviceCertificate.serial == normal, _visible(permission))
    )
    if found is None:
        if permission != READ and session.scalar(
            select(DeviceCertificate.id).where(DeviceCertificate.serial == normal, _visible(READ))
        ):
            forbidden(permission)
        not_found("certificate")
    return found


@certificates.route("")
class Certificates(MethodView):
    @requires(READ)
    @certificates.arguments(CertificateQuerySchema, location="query")
    @certificates.response(200, CertificateSchema(many=True))
    @certificates.paginated()
    def get(self, query: dict[str, Any]) -> Select[Any]:
        """List certificates, newest first; filter by device, state, or expiry before a moment
        (those to renew)."""
        stmt = select(DeviceCertificate).where(_visible(READ))
        if "device_id" in query:
            stmt = stmt.where(DeviceCertificate.device_id == query["device_id"])
        if "state" in query:
            stmt = stmt.where(DeviceCertificate.state == query["state"])
        if "expiring_before" in query:
            stmt = stmt.where(DeviceCertificate.not_after < query["expiring_before"])
        return stmt.order_by(DeviceCertificate.id.desc())


@certificates.route("/<string(maxlength=64):serial>", endpoint="Certificate")
class CertificateItem(MethodView):
    @requires(READ)
    @certificates.response(200, CertificateSchema)
    def get(self, serial: str) -> DeviceCertificate:
        """Read a certificate by serial (hex; `0A:1B` and `0x0a1b` are read too)."""
        return _certificate(serial, READ)


@certificates.route("/<string(maxlength=64):serial>/revoke", endpoint="Revocation")
class Revocation(MethodView):
    @requires(REVOKE)
    @certificates.arguments(RevocationSchema)
    @certificates.response(200, CertificateSchema)
    @certificates.alt_response(409, response="CONFLICT")
    def post(self, data: dict[str, Any], serial: str) -> DeviceCertificate:
        """Revoke a certificate: it is on the CRL from now on (the CRL files are rewritten at
        once). 409 when it is revoked already."""
        found = _certificate(serial, REVOKE)
        session = request_session()
        service.revoke(
            session,
            _settings(),
            serial=found.serial,
            reason=data["reason"],
            actor=current_principal(),
        )
        commit()
        # Disconnected at once; without another certificate in force its broker account goes
        # (docs/mutual-tls.md: what each broker does on reconnect).
        refresh_broker("certificate revocation", found.device_id, kick=True)
        return found


def _issued(device_id: str, issued: service.Issued) -> dict[str, Any]:
    return {"device_id": device_id, **dataclasses.asdict(issued)}


@device_certificates.route(
    "/<string(maxlength=64):device_id>/certificates", endpoint="DeviceCertificates"
)
class DeviceCertificates(MethodView):
    @requires(SIGN)
    @device_certificates.arguments(CsrSchema)
    @device_certificates.response(201, IssuedSchema)
    @device_certificates.alt_response(409, response="CONFLICT")
    def post(self, data: dict[str, Any], device_id: str) -> dict[str, Any]:
        """Sign a CSR for the device with the platform's device CA. A CSR that fails a check
        is a 422 whose message says which (`csr: the CSR's CN is ...`); nothing is written."""
        device = get_device(device_id, SIGN)
        issued = service.issue_for_device(
            request_session(), _settings(), device.id, data["csr"], actor=current_principal()
        )
        commit()
        refresh_broker("certificate issue", device.id)  # a broker account for the certificate
        return _issued(device.id, issued)


@device_certificates.route(
    "/<string(maxlength=64):device_id>/certificates/recertify", endpoint="Recertification"
)
class Recertification(MethodView):
    @requires(SIGN)
    @device_certificates.response(201, IssuedSchema)
    @device_certificates.alt_response(409, response="CONFLICT")
    def post(self, device_id: str) -> dict[str, Any]:
        """Issue a new certificate for the key of the device's latest certificate that is not
        revoked: for boards that cannot make a new key. 409 when it has none."""
        device = get_device(device_id, SIGN)
        issued = service.recertify(
            request_session(), _settings(), device.id, actor=current_principal()
        )
        commit()
        refresh_broker("re-certification", device.id)
        return _issued(device.id, issued)


def _current_crl() -> bytes:
    session = request_session()
    row = crl.current(session, _settings())  # made, or renewed when due
    commit()
    return row.crl_der


@pki.route("/ca.pem", endpoint="CaChain")
class CaChain(MethodView):
    @pki.response(200, content_type="application/x-pem-file")
    def get(self) -> Response:
        """The CA chain devices' certificates verify against: the device CA, then the root
        (PEM). What a broker uses as `cafile`. Public route."""
        chain = service.ca_chain_pem(request_session(), _settings())
        commit()
        return Response(chain, mimetype="application/x-pem-file")


@pki.route("/crl", endpoint="Crl")
class Crl(MethodView):
    @pki.response(200, content_type="application/pkix-crl")
    def get(self) -> Response:
        """The device CA's current CRL, DER (RFC 5280; `application/pkix-crl`, RFC 2585).
        Public route."""
        return Response(_current_crl(), mimetype="application/pkix-crl")


@pki.route("/crl.pem", endpoint="CrlPem")
class CrlPem(MethodView):
    @pki.response(200, content_type="application/x-pem-file")
    def get(self) -> Response:
        """The same CRL, PEM: what Mosquitto's `crlfile` holds. Public route."""
        return Response(crl.pem_of(_current_crl()), mimetype="application/x-pem-file")
