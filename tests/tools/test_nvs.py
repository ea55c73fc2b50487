"""``ampfleet firmware nvs``: the partition a device boots with, read back as the device would."""

from __future__ import annotations

import datetime as dt
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cloud.cli import main
from firmware.tools import ToolError, nvs
from tests.tools import nvs_reader

PASSWORD = "Zq8-not-a-real-secret-Vx3"
WIFI_PASSWORD = "wpa2-passphrase-77"
BROKER = "mqtts://mqtt.example.com:8883"


def pem_certificates(count: int) -> bytes:
    """``count`` self-signed CA certificates, PEM, concatenated like a CA bundle."""
    out = b""
    for n in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ampfleet test CA {n}")])
        start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(n + 1)
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        out += cert.public_bytes(serialization.Encoding.PEM)
    return out


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password.txt"
    path.write_text(PASSWORD + "\n")  # as `jq -r .password > password.txt` leaves it
    return path


def nvs_args(password_file: Path, out: Path, *extra: str) -> list[str]:
    return [
        "firmware",
        "nvs",
        "--device-id",
        "af-00c0ffee",
        "--password-file",
        str(password_file),
        "--broker-url",
        BROKER,
        "--out",
        str(out),
        *extra,
    ]


def test_partition_holds_every_key_as_a_blob(tmp_path: Path, password_file: Path) -> None:
    ca = pem_certificates(12)  # ~6 KB: a blob that spans pages
    (tmp_path / "ca.pem").write_bytes(ca)
    out = tmp_path / "dev" / "af-00c0ffee.bin"
    args = nvs_args(password_file, out, "--ca-file", str(tmp_path / "ca.pem"))
    args += ["--wifi-ssid", "Factory Floor", "--wifi-password", WIFI_PASSWORD]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output

    data = out.read_bytes()
    assert len(data) == 0x6000
    items = nvs_reader.read(data)
    assert {key: item.value for (_ns, key), item in items.items()} == {
        "device_id": b"af-00c0ffee",
        "mqtt_pass": PASSWORD.encode(),
        "broker_url": BROKER.encode(),
        "ca_cert": ca,
        "wifi_ssid": b"Factory Floor",
        "wifi_pass": WIFI_PASSWORD.encode(),
    }
    # MicroPython's esp32.NVS reads blobs only: esp32.NVS("ampfleet").get_blob(key, buf)
    assert {ns for ns, _key in items} == {"ampfleet"}
    assert {item.kind for item in items.values()} == {"blob"}


def test_secrets_are_never_printed_and_files_are_private(
    tmp_path: Path, password_file: Path
) -> None:
    out = tmp_path / "af.bin"
    args = nvs_args(password_file, out, "--wifi-ssid", "lab", "--wifi-password", WIFI_PASSWORD)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output and WIFI_PASSWORD not in result.output
    assert "mqtt_pass (secret)" in result.stdout and "delete them" in result.stderr
    for path in (out, tmp_path / "af.csv"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_password_from_stdin_and_a_custom_size(tmp_path: Path) -> None:
    out = tmp_path / "af.bin"
    args = [
        "firmware",
        "nvs",
        "--device-id",
        "af-1",
        "--password-stdin",
        "--broker-url",
        "mqtt://localhost",
        "--out",
        str(out),
        "--size",
        "16384",
    ]
    result = CliRunner().invoke(main, args, input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert len(out.read_bytes()) == 0x4000
    assert nvs_reader.read(out.read_bytes())[("ampfleet", "mqtt_pass")].value == PASSWORD.encode()


def test_the_csv_replays_to_the_same_binary_with_nvs_partition_gen(
    tmp_path: Path, password_file: Path
) -> None:
    out = tmp_path / "af.bin"
    assert CliRunner().invoke(main, nvs_args(password_file, out)).exit_code == 0
    replayed = tmp_path / "replayed.bin"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "esp_idf_nvs_partition_gen",
            "generate",
            str(tmp_path / "af.csv"),
            str(replayed),
            "0x6000",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert replayed.read_bytes() == out.read_bytes()


@pytest.mark.parametrize(
    ("change", "names"),
    [
        pytest.param(lambda a: a[:2] + a[4:], "'--device-id'", id="no-device-id"),
        pytest.param(lambda a: [*a[:3], "has/slash", *a[4:]], "'--device-id'", id="bad-device-id"),
        pytest.param(lambda a: a[:4] + a[6:], "--password-file FILE or", id="no-password"),
        pytest.param(lambda a: [*a, "--password-stdin"], "not both", id="two-passwords"),
        pytest.param(lambda a: [*a, "--size", "0x6100"], "'--size'", id="size-not-pages"),
        pytest.param(lambda a: [*a, "--size", "0x2000"], "'--size'", id="size-too-small"),
        pytest.param(lambda a: [*a, "--size", "lots"], "'--size'", id="size-not-a-number"),
        pytest.param(
            lambda a: [*a[:7], "https://mqtt.example.com", *a[8:]], "'--broker-url'", id="https"
        ),
        pytest.param(
            lambda a: [*a, "--wifi-password", WIFI_PASSWORD], "--wifi-ssid", id="wifi-no-ssid"
        ),
        pytest.param(
            lambda a: [*a, "--wifi-ssid", "x", "--wifi-password", "short"],
            "'--wifi-password'",
            id="wifi-short-password",
        ),
        pytest.param(lambda a: [*a, "--wifi-ssid", "s" * 33], "'--wifi-ssid'", id="wifi-long-ssid"),
    ],
)
def test_bad_input_names_the_option(
    tmp_path: Path, password_file: Path, change: Callable[[list[str]], list[str]], names: str
) -> None:
    out = tmp_path / "af.bin"
    result = CliRunner().invoke(main, change(nvs_args(password_file, out)))
    assert result.exit_code == 2, result.output
    assert names in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_an_empty_password_file_or_a_bad_ca_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    out = tmp_path / "af.bin"
    result = CliRunner().invoke(main, nvs_args(empty, out))
    assert result.exit_code == 2 and "'--password-file'" in result.output
    (tmp_path / "ca.pem").write_text("not a certificate")
    password = tmp_path / "pw"
    password.write_text(PASSWORD)
    result = CliRunner().invoke(
        main, nvs_args(password, out, "--ca-file", str(tmp_path / "ca.pem"))
    )
    assert result.exit_code == 2 and "'--ca-file'" in result.output
    assert not out.exists()


def test_content_too_large_for_the_partition(tmp_path: Path, password_file: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(pem_certificates(30))  # ~16 KB
    out = tmp_path / "af.bin"
    args = nvs_args(password_file, out, "--ca-file", str(tmp_path / "ca.pem"), "--size", "0x3000")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "does not fit 0x3000 bytes" in result.output
    assert not out.exists()


def test_content_is_checked_without_the_cli() -> None:
    with pytest.raises(ToolError, match="Wi-Fi SSID"):
        nvs.DeviceNvs("af-1", PASSWORD, BROKER, wifi_password=WIFI_PASSWORD)
    with pytest.raises(ToolError, match="device id"):
        nvs.DeviceNvs("", PASSWORD, BROKER)
