"""The broker's first-start CA and server certificate (``ampfleet broker tls-files``)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509

from broker.mosquitto.tls import ensure_tls_files
from cloud.cli import main


def test_the_server_certificate_is_issued_by_the_ca_for_every_name(tmp_path: Path) -> None:
    files, created = ensure_tls_files(tmp_path, ["mqtt.example.com", "localhost", "127.0.0.1"])
    assert len(created) == 4
    ca = x509.load_pem_x509_certificate(files.ca_file.read_bytes())
    server = x509.load_pem_x509_certificate(files.certfile.read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["mqtt.example.com", "localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert files.keyfile.stat().st_mode & 0o777 == 0o600
    assert files.ca_key.stat().st_mode & 0o777 == 0o600


def test_existing_files_are_kept_and_a_new_ca_reissues_the_server_certificate(
    tmp_path: Path,
) -> None:
    files, _ = ensure_tls_files(tmp_path, ["localhost"])
    before = files.certfile.read_bytes(), files.ca_file.read_bytes()
    assert ensure_tls_files(tmp_path, ["other"])[1] == []
    assert (files.certfile.read_bytes(), files.ca_file.read_bytes()) == before
    files.ca_key.unlink()
    _, created = ensure_tls_files(tmp_path, ["localhost"])
    assert str(files.certfile) in created
    ca = x509.load_pem_x509_certificate(files.ca_file.read_bytes())
    x509.load_pem_x509_certificate(files.certfile.read_bytes()).verify_directly_issued_by(ca)


def test_the_command_writes_then_keeps(tmp_path: Path) -> None:
    first = CliRunner().invoke(main, ["broker", "tls-files", str(tmp_path), "--name", "mosquitto"])
    assert first.exit_code == 0, first.output
    assert "wrote" in first.output and (tmp_path / "ca.pem").exists()
    again = CliRunner().invoke(main, ["broker", "tls-files", str(tmp_path), "--name", "mosquitto"])
    assert again.exit_code == 0 and "kept" in again.output
