"""REST resources: /devices/{id}/credentials, the MQTT credentials of a device.

The password is returned once, by the issue and by each rotation; the records keep its
argon2id hash only. Every change is written to the registry first, then pushed to the broker
(``cloud.api.devices.broker_sync``). When the broker cannot be reached the request still succeeds:
the registry is the truth, the failure is logged, and ``ampfleet broker resync`` applies it
(on Mosquitto a stale password is disabled; the embedded broker reads the registry itself).
"""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView

from cloud.api.auth import current_principal, requires
from cloud.api.blueprint import Blueprint
from cloud.api.devices.broker_sync import push, refresh_broker
from cloud.api.devices.credentials_schemas import CredentialSchema, IssuedCredentialSchema
from cloud.api.devices.routes import get_device
from cloud.api.errors import fail, not_found
from cloud.api.identity.users import hasher
from cloud.api.records import commit
from cloud.audit.service import record
from cloud.db import request_session, utcnow
from cloud.devices.credentials import DeviceCredential, may_connect, new_password
from cloud.devices.models import Device, LifecycleState
from cloud.settings import Settings

PERMISSION = "devices:credentials"

credentials = Blueprint(
    "device_credentials",
    __name__,
    url_prefix="/devices",
    description="MQTT credentials of devices: issued once, rotated, revoked.",
)


def _settings() -> Settings:
    settings: Settings = current_app.extensions["ampfleet.settings"]
    return settings


def describe(credential: DeviceCredential, **secret: Any) -> dict[str, Any]:
    """The representation of ``credential`` (plus the one-time fields, when given)."""
    return {
        "device_id": credential.device_id,
        "state": credential.state,
        "username": credential.device_id,
        "client_id": credential.device_id,
        "broker_url": _settings().broker_url,
        "created_at": credential.created_at,
        "rotated_at": credential.rotated_at,
        "revoked_at": credential.revoked_at,
        **secret,
    }


def _credential(device: Device) -> DeviceCredential:
    credential = request_session().get(DeviceCredential, device.id)
    if credential is None:
        not_found("credentials")
    return credential


def _check_issuable(device: Device) -> None:
    settings = _settings()
    if device.id in (
        settings.broker_service_user,
        settings.broker_admin_user,
        settings.broker_bridge_user,
    ):
        # The broker would take the device for the cloud's own account (Mosquitto has one
        # namespace of usernames).
        fail(409, message=f"device id {device.id!r} is reserved for a broker account of the cloud")
    if device.state is LifecycleState.DECOMMISSIONED:
        fail(409, message="the device is decommissioned: it gets no credentials")
    if not settings.device_passwords:
        fail(
            409,
            message="device passwords are off (AMPFLEET_BROKER_DEVICE_PASSWORDS): devices "
            "connect with a certificate of the platform PKI (docs/mutual-tls.md)",
        )


def _audit(device: Device, action: str, details: dict[str, Any]) -> None:
    record(
        request_session(),
        current_principal(),
        action,
        "device",
        device.id,
        device.organization_id,
        details,  # never the password
    )


@credentials.route("/<string(maxlength=64):device_id>/credentials", endpoint="Credentials")
class Credentials(MethodView):
    @requires("devices:read")
    @credentials.etag
    @credentials.response(200, CredentialSchema)
    def get(self, device_id: str) -> dict[str, Any]:
        """Show the state of the device's credentials (never the secret)."""
        return describe(_credential(get_device(device_id, "devices:read")))

    @requires(PERMISSION)
    @credentials.response(201, IssuedCredentialSchema)
    def post(self, device_id: str) -> dict[str, Any]:
        """Issue MQTT credentials; the password is in this answer only.

        409 when the device holds active credentials (rotate or revoke them instead).
        """
        device = get_device(device_id, PERMISSION)
        _check_issuable(device)
        session = request_session()
        credential = session.get(DeviceCredential, device.id)
        if credential is not None and credential.revoked_at is None:
            fail(409, message="credentials already issued: rotate or revoke them")
        password = new_password(device.protocol)
        secret_hash = hasher().hash(password)
        if credential is None:
            credential = DeviceCredential(device_id=device.id, secret_hash=secret_hash)
            session.add(credential)
        else:  # re-issue after a revocation: a new credential in the same row
            credential.secret_hash = secret_hash
            credential.created_at = utcnow()
            credential.rotated_at = credential.revoked_at = None
        session.flush()
        _audit(device, "device.credentials_issue", {"username": device.id})
        commit()
        synced = push(
            "credentials issue",
            device.id,
            lambda admin: admin.upsert_device(
                device.id,
                password,
                version=credential.version,
                enabled=may_connect(device.state, None),
            ),
        )
        return describe(credential, password=password, broker_synced=synced)

    @requires(PERMISSION)
    @credentials.etag
    @credentials.response(204)
    def delete(self, device_id: str) -> None:
        """Revoke the credentials: the broker refuses the device from now on and disconnects
        it if it is connected."""
        device = get_device(device_id, PERMISSION)
        credential = _credential(device)
        credentials.check_etag(describe(credential), CredentialSchema)
        if credential.revoked_at is not None:
            fail(409, message="credentials already revoked")
        credential.revoked_at = utcnow()
        _audit(device, "device.credentials_revoke", {"username": device.id})
        commit()
        # A device that also holds a certificate keeps its account (without the password).
        refresh_broker("credentials revocation", device.id, kick=True)


@credentials.route("/<string(maxlength=64):device_id>/credentials/rotate", endpoint="Rotation")
class Rotation(MethodView):
    @requires(PERMISSION)
    @credentials.response(200, IssuedCredentialSchema)
    def post(self, device_id: str) -> dict[str, Any]:
        """Replace the password; the old one stops working now (a session that used it is
        disconnected). The new password is in this answer only."""
        device = get_device(device_id, PERMISSION)
        credential = _credential(device)
        _check_issuable(device)
        if credential.revoked_at is not None:
            fail(409, message="credentials revoked: issue new ones instead")
        password = new_password(device.protocol)
        credential.secret_hash = hasher().hash(password)
        credential.rotated_at = utcnow()
        _audit(device, "device.credentials_rotate", {"username": device.id})
        commit()
        synced = push(
            "credentials rotation",
            device.id,
            lambda admin: admin.upsert_device(
                device.id,
                password,
                version=credential.version,
                enabled=may_connect(device.state, None),
            ),
        )
        return describe(credential, password=password, broker_synced=synced)
