"""What OpenSSL (the library under Mosquitto and Python's ssl) makes of the PKI's files: the
CA chain verifies a device certificate for TLS client use, and the CRL file turns a revoked one
away, as Mosquitto's ``cafile``/``crlfile`` will."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cloud.db import Database
from cloud.pki import service
from tests.pki.support import add_device, fresh_database, make_csr, pki_settings

OPENSSL = shutil.which("openssl")


@pytest.mark.skipif(OPENSSL is None, reason="no openssl command")
def test_openssl_verifies_with_the_chain_and_refuses_what_the_crl_lists(tmp_path: Path) -> None:
    database: Database = fresh_database(tmp_path / "data")
    settings = pki_settings(tmp_path / "data", database.url)
    with database.transaction() as session:
        device = add_device(session)
        kept = service.issue_for_device(
            session, settings, device.id, make_csr(device.id), actor=None
        )
        gone = service.issue_for_device(
            session, settings, device.id, make_csr(device.id), actor=None
        )
    with database.transaction() as session:
        service.revoke(session, settings, serial=gone.serial, reason="keyCompromise", actor=None)
    database.engine.dispose()

    def verify(issued: service.Issued) -> subprocess.CompletedProcess[str]:
        leaf = tmp_path / f"{issued.serial}.pem"
        leaf.write_text(issued.certificate_pem)
        command = [str(OPENSSL), "verify", "-purpose", "sslclient", "-x509_strict"]
        command += ["-CAfile", settings.pki_ca_file, "-crl_check", "-CRLfile"]
        command += [settings.pki_crl_file, str(leaf)]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)

    accepted = verify(kept)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    refused = verify(gone)
    assert refused.returncode != 0
    assert "certificate revoked" in refused.stdout + refused.stderr
