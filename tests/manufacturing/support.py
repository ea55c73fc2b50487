"""Helpers of the manufacturing tests: a station client, batches, CSRs, and what "nothing
written" means (a snapshot of every table an enrollment touches)."""

from __future__ import annotations

import secrets
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from flask import Flask
from sqlalchemy import func, select

from cloud.audit.models import AuditEntry
from cloud.db import get_database
from cloud.devices.models import Device
from cloud.manufacturing.models import BatchSerial, MacPool
from tests.helpers import Client, Tenant, role_id


def csr_for(common_name: str, key: Any = None) -> str:
    """A PEM CSR with subject CN ``common_name`` (a fresh P-256 key unless given)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM).decode()


def rsa1024_csr(common_name: str) -> str:
    """A CSR with a key too weak to certify."""
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - on purpose
    return csr_for(common_name, weak)


def station_client(tenant: Tenant) -> tuple[str, str]:
    """A factory station's API client of ``tenant`` (role factory-station): (id, secret)."""
    admin = tenant.admin
    made = admin.created(
        "/clients",
        {
            "name": "station " + secrets.token_hex(3),
            "organization_id": tenant.id,
            "roles": [{"role_id": role_id(admin, "factory-station")}],
        },
    )
    return made["client_id"], made["client_secret"]


def station(tenant: Tenant) -> Client:
    """A factory station: an API client of ``tenant`` holding the factory-station role."""
    admin = tenant.admin
    client_id, secret = station_client(tenant)
    response = admin.http.post(
        "/api/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    assert response.status_code == 200, response.get_json()
    return Client(admin.http, response.get_json()["access_token"])


def prefix() -> str:
    """A serial prefix no other test uses (serials are global)."""
    return "T" + secrets.token_hex(4).upper() + "-"


def approved_batch(
    tenant: Tenant, approver: Client, count: int = 3, **extra: Any
) -> tuple[dict[str, Any], list[str]]:
    """A batch of ``count`` ac22-3p serials created by the platform admin and approved by
    ``approver``; returns it and its serials."""
    first = prefix()
    batch = tenant.admin.created(
        "/batches",
        {
            "organization_id": tenant.id,
            "hardware_family": "ac22-3p",
            "count": count,
            "serial_range": {"prefix": first, "first": 1, "last": count, "digits": 4},
            **extra,
        },
    )
    answer = approver.post(f"/batches/{batch['id']}/approve")
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json(), [f"{first}{n:04d}" for n in range(1, count + 1)]


def mac_pool(tenant: Tenant, size: int = 64) -> dict[str, Any]:
    """A MAC pool of ``size`` addresses in a random locally administered block."""
    octets = [0x02] + [secrets.randbelow(256) for _ in range(3)] + [0, 0]
    first = ":".join(f"{o:02X}" for o in octets)
    return tenant.admin.created(
        "/mac-pools", {"organization_id": tenant.id, "first": first, "size": size}
    )


def snapshot(app: Flask, tenant: Tenant) -> tuple[Any, ...]:
    """Everything an enrollment writes for ``tenant``: devices, enrolled serials, the pools'
    counters, audit entries."""
    with get_database(app).transaction() as session:
        org = tenant.id
        return (
            session.scalar(select(func.count()).where(Device.organization_id == org)),
            session.scalar(
                select(func.count())
                .select_from(BatchSerial)
                .where(BatchSerial.enrolled_at.is_not(None), BatchSerial.device_id.is_not(None))
            ),
            tuple(session.scalars(select(MacPool.next).where(MacPool.organization_id == org))),
            session.scalar(select(func.count()).where(AuditEntry.organization_id == org)),
        )
