"""The PKI over HTTP, on SQLite and MariaDB: signing a device's CSR (and refusing bad ones with
the reason), listing and revoking certificates inside the caller's organizations, and the
public CA chain and CRL."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.helpers import Client, Tenant
from tests.pki.support import make_csr, rsa_key


def test_sign_list_revoke_and_the_crl(client: Client, tenant: Tenant) -> None:
    device = tenant.device()
    url = f"/devices/{device['id']}/certificates"
    for csr, reason in (
        (make_csr("af-someone-else"), "not the device id"),
        (make_csr(device["id"], rsa_key(1024)), "RSA of 1024 bits"),
        ("not a csr", "not PEM-encoded"),
    ):
        refused = tenant.admin.post(url, json={"csr": csr})
        assert refused.status_code == 422, refused.get_json()
        assert reason in refused.get_json()["errors"]["json"]["csr"][0]
        assert refused.get_json()["message"].startswith("csr: ")
    key = ec.generate_private_key(ec.SECP256R1())
    issued = tenant.admin.created(url, {"csr": make_csr(device["id"], key)})
    leaf, devices_ca, root = x509.load_pem_x509_certificates(issued["chain_pem"].encode())
    leaf.verify_directly_issued_by(devices_ca)
    assert issued["device_id"] == device["id"]
    renewed = tenant.admin.post(f"{url}/recertify")
    assert renewed.status_code == 201, renewed.get_json()
    renewed_leaf = x509.load_pem_x509_certificate(renewed.get_json()["certificate_pem"].encode())
    assert renewed_leaf.public_key() == key.public_key()

    listed = tenant.admin.get("/certificates", query_string={"device_id": device["id"]})
    assert listed.status_code == 200
    assert {c["serial"] for c in listed.get_json()} == {
        issued["serial"],
        renewed.get_json()["serial"],
    }
    item = tenant.admin.get(f"/certificates/{issued['serial'].upper()}").get_json()
    assert item["state"] == "issued" and item["fingerprint"] == issued["fingerprint"]

    number = _crl(client).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    bad = tenant.admin.post(f"/certificates/{issued['serial']}/revoke", json={"reason": "whim"})
    assert bad.status_code == 422 and "reason" in bad.get_json()["errors"]["json"]
    revoked = tenant.admin.post(
        f"/certificates/{issued['serial']}/revoke", json={"reason": "keyCompromise"}
    )
    assert revoked.status_code == 200, revoked.get_json()
    assert revoked.get_json()["state"] == "revoked"
    again = tenant.admin.post(
        f"/certificates/{issued['serial']}/revoke", json={"reason": "keyCompromise"}
    )
    assert again.status_code == 409
    crl = _crl(client)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > number
    assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None
    assert crl.is_signature_valid(devices_ca.public_key())  # type: ignore[arg-type]
    pem = client.get("/pki/crl.pem")
    assert pem.status_code == 200 and pem.data.startswith(b"-----BEGIN X509 CRL-----")
    chain = client.get("/pki/ca.pem")
    assert chain.status_code == 200
    assert x509.load_pem_x509_certificates(chain.data) == [devices_ca, root]
    revoked_only = tenant.admin.get(
        "/certificates", query_string={"device_id": device["id"], "state": "revoked"}
    ).get_json()
    assert [c["serial"] for c in revoked_only] == [issued["serial"]]


def _crl(client: Client) -> x509.CertificateRevocationList:
    answer = client.get("/pki/crl")  # public: no token
    assert answer.status_code == 200 and answer.mimetype == "application/pkix-crl"
    return x509.load_der_x509_crl(answer.data)


def test_certificates_are_scoped_and_need_their_permissions(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    device = tenant.device()
    issued = tenant.admin.created(
        f"/devices/{device['id']}/certificates", {"csr": make_csr(device["id"])}
    )
    serial = issued["serial"]
    _, installer = tenant.user("installer")  # no certificates:read
    answer = installer.get("/certificates")
    assert answer.status_code == 403
    assert answer.get_json()["errors"]["permission"] == ["certificates:read"]
    _, support = tenant.user("support")  # reads, may not revoke
    assert support.get(f"/certificates/{serial}").status_code == 200
    assert (
        support.post(f"/certificates/{serial}/revoke", json={"reason": "superseded"}).status_code
        == 403
    )
    csr = {"csr": make_csr(device["id"])}
    assert support.post(f"/devices/{device['id']}/certificates", json=csr).status_code == 403
    # Another organization does not even learn that the certificate exists.
    _, stranger = other_tenant.user("organization-admin")
    assert stranger.get(f"/certificates/{serial}").status_code == 404
    assert stranger.get("/certificates", query_string={"device_id": device["id"]}).get_json() == []
    assert (
        stranger.post(f"/certificates/{serial}/revoke", json={"reason": "superseded"}).status_code
        == 404
    )
    assert stranger.post(f"/devices/{device['id']}/certificates", json=csr).status_code == 404
    # A deleted device's certificates go on the CRL; the platform admin still sees them.
    assert tenant.admin.delete(f"/devices/{device['id']}").status_code == 204
    kept = tenant.admin.get(f"/certificates/{serial}").get_json()
    assert kept["state"] == "revoked" and kept["revocation_reason"] == "cessationOfOperation"
