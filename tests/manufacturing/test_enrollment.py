"""Enrollment: a station enrolls an approved serial; every refusal names its reason and writes
nothing; MAC addresses are handed out once, also to 20 stations at the same moment."""

from __future__ import annotations

import secrets
import threading
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask

from tests.helpers import Client, Tenant
from tests.manufacturing.support import (
    approved_batch,
    csr_for,
    mac_pool,
    rsa1024_csr,
    snapshot,
    station,
)
from tests.pki.test_csr import tampered_signature

CHIP = "58cf790a0b0c"
SLAVES = ["58cf790a0b0d", "58cf790a0b0e"]


@pytest.fixture
def line(app: Flask, tenant: Tenant) -> dict[str, Any]:
    """A tenant with a MAC pool, an approved batch of 3 and a station."""
    _, approver = tenant.user("organization-admin")
    pool = mac_pool(tenant, size=2)
    batch, serials = approved_batch(tenant, approver, count=3)
    return {
        "pool": pool,
        "batch": batch,
        "serials": serials,
        "station": station(tenant),
        "approver": approver,
    }


def chip_mac() -> str:
    """A chip's own MAC (Espressif's OUI), one no other test uses."""
    return "58:CF:79:" + ":".join(f"{secrets.randbelow(256):02X}" for _ in range(3))


def body(serial: str, **fields: Any) -> dict[str, Any]:
    """An enrollment request for ``serial`` with a good CSR and the standard hardware."""
    return {
        "serial": serial,
        "csr": csr_for(serial),
        "chip_id": CHIP,
        "slave_ids": SLAVES,
        **fields,
    }


def test_a_station_enrolls_a_board(app: Flask, tenant: Tenant, line: dict[str, Any]) -> None:
    serial = line["serials"][0]
    key = ec.generate_private_key(ec.SECP256R1())
    answer = line["station"].post(
        "/enrollment", json=body(serial, csr=csr_for(serial, key), slave_ids=SLAVES[::-1])
    )
    assert answer.status_code == 201, answer.get_json()
    done = answer.get_json()
    assert done["device_id"] == serial and done["state"] == "provisioned"
    assert done["mac"] == line["pool"]["first"] and done["organization_id"] == tenant.id
    cert = x509.load_pem_x509_certificate(done["certificate"].encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == serial
    assert cert.public_key() == key.public_key()
    assert "BEGIN CERTIFICATE" in done["ca_chain"] and done["firmware"]["version"]
    assert done["_links"]["device"]["href"] == f"/api/v1/devices/{serial}"

    device = tenant.admin.get(f"/devices/{serial}").get_json()
    assert device["chip_id"] == CHIP and device["slave_ids"] == sorted(SLAVES)
    assert device["approved_by"] == f"batch:{line['batch']['id']}"
    assert device["hardware_family"] == "ac22-3p" and device["mac"] == done["mac"]
    row = tenant.admin.get(f"/batches/{line['batch']['id']}/serials").get_json()[0]
    assert row["state"] == "enrolled" and row["device_id"] == serial
    assert row["certificate_serial"] == done["certificate_serial"]
    log = tenant.admin.get(
        "/audit-log", query_string={"object_type": "device", "object_id": serial}
    ).get_json()
    by_action = {e["action"]: e for e in log}
    assert set(by_action) == {"device.enroll", "certificate.issue"}
    assert by_action["device.enroll"]["details"]["state"] == ["manufactured", "provisioned"]

    # The chip's own MAC, read by esptool, is recorded instead of one from the pool.
    mac = chip_mac()
    own = line["station"].post(
        "/enrollment", json=body(line["serials"][1], mac=mac.lower().replace(":", "-"))
    )
    assert own.status_code == 201 and own.get_json()["mac"] == mac


def test_every_refusal_has_its_reason_and_writes_nothing(
    app: Flask, tenant: Tenant, line: dict[str, Any]
) -> None:
    st: Client = line["station"]
    first, second, third = line["serials"]
    assert st.post("/enrollment", json=body(first)).status_code == 201
    used = chip_mac()
    assert st.post("/enrollment", json=body(second, mac=used)).status_code == 201
    # A batch nobody approved yet, and one that expects other hardware.
    pending = tenant.admin.created(
        "/batches",
        {
            "organization_id": tenant.id,
            "hardware_family": "ac22-3p",
            "count": 1,
            "serials": [f"{first}-P"],
        },
    )
    assert pending["state"] == "pending"
    cases = [
        ("unknown serial", body("NOPE-000001"), 422, "serial", "unknown_serial"),
        ("batch not approved", body(f"{first}-P"), 409, "serial", "not_approved"),
        ("second enrollment", body(first), 409, "serial", "already_enrolled"),
        ("CSR with another CN", body(third, csr=csr_for("someone-else")), 422, "csr", "bad_csr"),
        ("RSA-1024 key", body(third, csr=rsa1024_csr(third)), 422, "csr", "bad_csr"),
        (
            "a bad signature",
            body(third, csr=tampered_signature(csr_for(third))),
            422,
            "csr",
            "bad_csr",
        ),
        ("not a CSR", body(third, csr="-----BEGIN NONSENSE-----"), 422, "csr", "bad_csr"),
        ("a MAC already used", body(third, mac=used), 409, "mac", "mac_taken"),
        ("a malformed chip id", body(third, chip_id="xyz"), 422, "chip_id", "bad_hardware_id"),
    ]
    before = snapshot(app, tenant)
    for what, request, status, field, reason in cases:
        answer = st.post("/enrollment", json=request)
        assert answer.status_code == status, (what, answer.get_json())
        errors = answer.get_json()["errors"]
        assert field in errors["json"] and errors["reason"] == [reason], (what, errors)
        assert snapshot(app, tenant) == before, f"{what}: something was written"


def test_hardware_other_than_the_batch_expects_is_refused(app: Flask, tenant: Tenant) -> None:
    _, approver = tenant.user("organization-admin")
    mac_pool(tenant, size=4)
    st = station(tenant)
    first = "HW" + tenant.slug[2:].upper() + "-"
    batch = tenant.admin.created(
        "/batches",
        {
            "organization_id": tenant.id,
            "hardware_family": "ac22-3p",
            "count": 1,
            "serials": [f"{first}1"],
            "expected": [{"serial": f"{first}1", "chip_id": CHIP, "slave_ids": SLAVES}],
        },
    )
    assert approver.post(f"/batches/{batch['id']}/approve").status_code == 200
    before = snapshot(app, tenant)
    swapped = st.post("/enrollment", json=body(f"{first}1", slave_ids=[SLAVES[0], "aabbccddeeff"]))
    assert swapped.status_code == 422, swapped.get_json()
    assert swapped.get_json()["errors"]["reason"] == ["hardware_mismatch"]
    assert "aabbccddeeff" in swapped.get_json()["message"]
    other_chip = st.post("/enrollment", json=body(f"{first}1", chip_id="001122334455"))
    assert "chip_id" in other_chip.get_json()["errors"]["json"]
    assert snapshot(app, tenant) == before
    assert st.post("/enrollment", json=body(f"{first}1")).status_code == 201


def test_an_exhausted_pool_is_a_conflict_and_writes_nothing(
    app: Flask, tenant: Tenant, line: dict[str, Any]
) -> None:
    st = line["station"]
    a, b, c = line["serials"]
    assert st.post("/enrollment", json=body(a)).status_code == 201
    assert st.post("/enrollment", json=body(b)).status_code == 201  # the pool had 2
    before = snapshot(app, tenant)
    answer = st.post("/enrollment", json=body(c))
    assert answer.status_code == 409, answer.get_json()
    assert answer.get_json()["errors"]["reason"] == ["mac_pool_exhausted"]
    assert snapshot(app, tenant) == before
    pool = tenant.admin.get(f"/mac-pools/{line['pool']['id']}").get_json()
    assert pool["free"] == 0 and pool["next"] is None


def test_only_a_station_of_the_organization_enrolls(
    app: Flask, tenant: Tenant, other_tenant: Tenant, line: dict[str, Any]
) -> None:
    outsider = station(other_tenant)
    answer = outsider.post("/enrollment", json=body(line["serials"][0]))
    assert answer.status_code == 422 and answer.get_json()["errors"]["reason"] == ["unknown_serial"]
    _, viewer = tenant.user("support")
    assert viewer.post("/enrollment", json=body(line["serials"][0])).status_code == 403


@pytest.mark.mariadb
def test_twenty_concurrent_enrollments_get_twenty_distinct_macs(
    app: Flask, backend: str, tenant: Tenant
) -> None:
    if backend != "mariadb":
        pytest.skip("row locks are MariaDB's: SQLite serialises writers anyway")
    _, approver = tenant.user("organization-admin")
    made = mac_pool(tenant, size=64)
    _, serials = approved_batch(tenant, approver, count=20)
    token = station(tenant).token
    requests = [body(serial) for serial in serials]
    answers: list[Any] = [None] * len(serials)
    start = threading.Barrier(len(serials))

    def enroll(index: int) -> None:
        client = Client(app.test_client(), token)
        start.wait()
        answers[index] = client.post("/enrollment", json=requests[index])

    threads = [threading.Thread(target=enroll, args=(i,)) for i in range(len(serials))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [a.status_code for a in answers] == [201] * 20, [a.get_json() for a in answers]
    macs = [a.get_json()["mac"] for a in answers]
    assert len(set(macs)) == 20
    pool = tenant.admin.get(f"/mac-pools/{made['id']}").get_json()
    assert pool["free"] == 64 - 20
