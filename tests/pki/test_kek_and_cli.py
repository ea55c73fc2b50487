"""Where the key-encryption key comes from (and where it may not), and ``ampfleet pki``."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from cloud.cli import main
from cloud.pki import KeyEncryptionError, keystore
from cloud.pki.kek import Kek, default_kek_file, load_kek, new_kek_text
from tests.pki.support import KEK, fresh_database, pki_settings


def test_sealing_binds_the_key_name() -> None:
    kek = Kek(os.urandom(32), "test")
    sealed = kek.seal("a", b"secret")
    assert kek.open("a", sealed, kek.id) == b"secret"
    with pytest.raises(KeyEncryptionError, match="another key"):
        kek.open("b", sealed, kek.id)  # copied into another key's row
    with pytest.raises(KeyEncryptionError, match="changed"):
        kek.open("a", sealed[:-1] + bytes([sealed[-1] ^ 1]), kek.id)


def test_the_embedded_kek_lives_under_the_config_home_not_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    database = fresh_database(tmp_path / "data")
    settings = pki_settings(tmp_path / "data", database.url, pki_kek="")
    path = default_kek_file()
    assert path == tmp_path / "config" / "ampfleet" / "pki-kek"
    with pytest.raises(KeyEncryptionError, match="does not exist"):
        load_kek(settings)  # only the first key makes it
    with database.transaction() as session:
        key = keystore.signing_key(session, settings, "first")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with database.transaction() as session:
        assert keystore.signing_key(session, settings, "first").private_numbers() == (
            key.private_numbers()
        )
    # Gone (a lost mount): the keys say which KEK they need; no new one is made.
    path.unlink()
    with database.transaction() as session, pytest.raises(KeyEncryptionError, match="not exist"):
        keystore.signing_key(session, settings, "first")
    assert not path.exists()


def test_a_kek_in_the_data_dir_and_production_without_one_are_refused(tmp_path: Path) -> None:
    inside = pki_settings(
        tmp_path / "data", "sqlite://", pki_kek="", pki_kek_file=str(tmp_path / "data" / "kek")
    )
    with pytest.raises(KeyEncryptionError, match="inside the data directory"):
        load_kek(inside, create=True)
    production = pki_settings(
        tmp_path / "data", "mysql+pymysql://u@db/ampfleet", pki_kek="", pki_kek_file=""
    )
    with pytest.raises(KeyEncryptionError, match="AMPFLEET_PKI_KEK"):
        load_kek(production)
    outside = tmp_path / "secrets" / "kek"
    outside.parent.mkdir()
    outside.write_text(new_kek_text())
    from_file = pki_settings(tmp_path / "data", "sqlite://", pki_kek="", pki_kek_file=str(outside))
    assert len(load_kek(from_file).key) == 32


def test_the_pki_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    fresh_database(data).engine.dispose()
    for key, value in {
        "AMPFLEET_DATA_DIR": str(data),
        "AMPFLEET_TESTING": "true",
        "AMPFLEET_PASSWORD_KDF": "insecure-fast-for-tests",
        "AMPFLEET_PKI_KEK": KEK,
    }.items():
        monkeypatch.setenv(key, value)
    runner = CliRunner()
    assert "no PKI yet" in runner.invoke(main, ["pki", "show"]).output
    assert runner.invoke(main, ["pki", "crl"]).exit_code == 1  # nothing to keep yet
    made = runner.invoke(main, ["pki", "init"])
    assert made.exit_code == 0, made.output
    assert "Root CA" in made.output and "Device CA" in made.output and "number 1" in made.output
    chain = x509.load_pem_x509_certificates((data / "pki" / "ca-chain.pem").read_bytes())
    assert [c.subject.rfc4514_string() for c in chain] == [
        "CN=ampfleet Device CA,O=ampfleet",
        "CN=ampfleet Root CA,O=ampfleet",
    ]
    assert runner.invoke(main, ["pki", "init"]).exit_code == 0  # again: the same CAs
    assert x509.load_pem_x509_certificates((data / "pki" / "ca-chain.pem").read_bytes()) == chain
    renewed = runner.invoke(main, ["pki", "crl", "--force"])
    assert renewed.exit_code == 0 and "CRL number 2" in renewed.output, renewed.output
    listed = x509.load_pem_x509_crl((data / "pki" / "crl.pem").read_bytes())
    assert listed.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    shown = runner.invoke(main, ["pki", "show"])
    assert "number 2" in shown.output and "certificates issued to devices: none" in shown.output
    kek = runner.invoke(main, ["pki", "new-kek"]).output.strip()
    assert len(kek) == 44 and kek != KEK
    masked = runner.invoke(main, ["settings"]).output
    assert "pki_kek = ***" in masked and KEK not in masked


def test_rekey_reseals_every_key_with_the_new_kek(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    database = fresh_database(data)
    old_settings = pki_settings(data, database.url)
    with database.transaction() as session:
        key = keystore.signing_key(session, old_settings, "firmware-releases")
    old_file = tmp_path / "old-kek"
    old_file.write_text(KEK)
    new = new_kek_text()
    for name, value in {
        "AMPFLEET_DATA_DIR": str(data),
        "AMPFLEET_DATABASE_URL": database.url,
        "AMPFLEET_PKI_KEK": new,
    }.items():
        monkeypatch.setenv(name, value)
    done = CliRunner().invoke(main, ["pki", "rekey", "--old-kek-file", str(old_file)])
    assert done.exit_code == 0 and "resealed 1 keys" in done.output, done.output
    again = CliRunner().invoke(main, ["pki", "rekey", "--old-kek-file", str(old_file)])
    assert "resealed 0 keys" in again.output
    new_settings = pki_settings(data, database.url, pki_kek=new)
    with database.transaction() as session:
        opened = keystore.signing_key(session, new_settings, "firmware-releases")
        assert opened.private_numbers() == key.private_numbers()
        with pytest.raises(KeyEncryptionError, match="another"):
            keystore.signing_key(session, old_settings, "firmware-releases")
    database.engine.dispose()
