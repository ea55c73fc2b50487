"""Guest credentials on the charger (docs/guest-credentials.md): the pure-Python ECDSA P-256
verifier, the credential checks, and a simulated charger that lets a guest charge with no cloud
link and reports the session when the link returns. Credentials are made by the cloud's code
(``cloud.access.guestpass``, on ``cryptography``); the same checks run under real MicroPython in
micropython_script.py."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from cloud.access.guestpass import make_credential, nvs_record_of, point_of
from cloud.cli import main
from firmware.core import guestpass, p256
from firmware.host import MemoryBroker, SimCharger
from firmware.host.clock import START_MS
from firmware.tools import ToolError, nvs
from tests.tools import nvs_reader

from .conftest import DEVICE
from .test_host import events
from .test_rfid import require_rfid

NOW = dt.datetime.fromtimestamp(START_MS // 1000, dt.UTC)
HOUR = dt.timedelta(hours=1)
KEY = ec.derive_private_key(0x1234567890ABCDEF, ec.SECP256R1())
OTHER_KEY = ec.derive_private_key(0xFEDCBA0987654321, ec.SECP256R1())
GUEST = "gst-abcdefghij12"


def signature(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def credential(
    charger: str = DEVICE,
    start: dt.datetime = NOW - HOUR,
    end: dt.datetime = NOW + HOUR,
    key: ec.EllipticCurvePrivateKey = KEY,
) -> str:
    return make_credential(key, charger, GUEST, start, end)


def tampered(text: str) -> str:
    """``text`` with a longer window than the platform signed."""
    head, tail = text.split(".")
    payload = json.loads(guestpass.b64url_decode(head))
    payload["na"] += 86400
    return guestpass.b64url_encode(json.dumps(payload).encode()) + "." + tail


def verifier(*keys: ec.EllipticCurvePrivateKey) -> guestpass.Verifier:
    record = nvs_record_of(k.public_key() for k in (keys or (KEY,)))
    return guestpass.Verifier(DEVICE, guestpass.keys_from_nvs(record))


# --- the ECDSA verifier ----------------------------------------------------------------------


def test_p256_verifies_what_cryptography_signs_and_nothing_else() -> None:
    key = p256.public_key(point_of(KEY.public_key()))
    other = p256.public_key(point_of(OTHER_KEY.public_key()))
    for n in range(4):
        message = b"message %d" % n
        sig = signature(KEY, message)
        assert p256.verify(key, message, sig)
        assert not p256.verify(other, message, sig)  # a wrong key
        assert not p256.verify(key, message + b".", sig)  # a tampered message
        flipped = bytearray(sig)
        flipped[n * 9] ^= 0x40
        assert not p256.verify(key, message, bytes(flipped))  # a tampered signature
        # ECDSA's other s (n - s) is as valid (FIPS 186-5 does not ask for low s).
        s = int.from_bytes(sig[32:], "big")
        assert p256.verify(key, message, sig[:32] + (p256.N - s).to_bytes(32, "big"))


def test_p256_refuses_r_and_s_out_of_range_and_bad_lengths() -> None:
    key = p256.public_key(point_of(KEY.public_key()))
    message = b"range"
    sig = signature(KEY, message)
    r, s = sig[:32], sig[32:]
    for bad in (0, p256.N, p256.N + 1, 2**256 - 1):
        value = bad.to_bytes(32, "big")
        assert not p256.verify(key, message, value + s)
        assert not p256.verify(key, message, r + value)
    # r + n is the same x mod n on the curve, but r must be below n.
    r_int = int.from_bytes(r, "big")
    if r_int + p256.N < 2**256:
        assert not p256.verify(key, message, (r_int + p256.N).to_bytes(32, "big") + s)
    assert not p256.verify(key, message, sig[:63])
    assert not p256.verify(key, message, sig + b"\x00")


def test_p256_refuses_points_that_are_not_on_the_curve() -> None:
    good = point_of(KEY.public_key())
    assert p256.public_key(good) == (
        KEY.public_key().public_numbers().x,
        KEY.public_key().public_numbers().y,
    )
    off = bytearray(good)
    off[-1] ^= 1
    for bad in (bytes(off), b"\x02" + good[1:], good[:64], b"\x04" + b"\xff" * 64, b""):
        with pytest.raises(ValueError):
            p256.public_key(bad)
    assert not p256.on_curve(p256.P, 0)


# --- the credential --------------------------------------------------------------------------


def test_a_credential_from_the_cloud_names_its_guest_here_and_now() -> None:
    text = credential()
    assert len(text) < 300 and text.isascii()
    payload, _, _ = guestpass.parse(text)
    assert payload == {
        "v": 1,
        "c": DEVICE,
        "g": GUEST,
        "nb": START_MS // 1000 - 3600,
        "na": START_MS // 1000 + 3600,
        "k": guestpass.key_id(point_of(KEY.public_key())),
    }
    assert verifier().check(text, START_MS) == (GUEST, None)


def test_the_window_is_checked_with_the_skew_allowance() -> None:
    check = verifier().check
    skew = guestpass.SKEW_MS
    start, end = START_MS + 3_600_000, START_MS + 7_200_000
    ahead = credential(start=NOW + HOUR, end=NOW + 2 * HOUR)
    assert check(ahead, start - skew - 1) == (GUEST, "not_yet_valid")
    assert check(ahead, start - skew) == (GUEST, None)
    assert check(ahead, end + skew - 1) == (GUEST, None)
    assert check(ahead, end + skew) == (GUEST, "expired")
    assert check(ahead, None) == (GUEST, "no_clock")


def test_refusals_name_their_reason() -> None:
    check = verifier().check
    good = credential()
    head, tail = good.split(".")
    assert check(tampered(good), START_MS) == (None, "bad_signature")
    assert check(credential(charger="CHG-0002"), START_MS) == (GUEST, "other_charger")
    assert check(credential(start=NOW - 2 * HOUR, end=NOW - HOUR), START_MS) == (
        GUEST,
        "expired",
    )
    assert check(credential(key=OTHER_KEY), START_MS) == (None, "unknown_key")
    signed_by_another = credential(key=OTHER_KEY).split(".")[1]
    assert check(head + "." + signed_by_another, START_MS) == (None, "bad_signature")
    for junk in ("", ".", "x", good + ".x", head, head + "." + tail[:-4], "é." + tail, 12, None):
        assert check(junk, START_MS) == (None, "malformed"), junk
    assert check(good.encode(), START_MS) == (GUEST, None)  # bytes from a reader are fine


def test_the_charger_holds_several_keys_and_drops_bad_entries() -> None:
    both = verifier(KEY, OTHER_KEY)
    assert both.check(credential(key=OTHER_KEY), START_MS) == (GUEST, None)
    assert both.check(credential(key=KEY), START_MS) == (GUEST, None)
    good = point_of(KEY.public_key())
    record = {
        guestpass.key_id(good): guestpass.b64url_encode(good),
        "wrongkid": guestpass.b64url_encode(good),
        "notakey": "AAAA",
        "number": 5,
    }
    assert list(guestpass.keys_from_nvs(json.dumps(record).encode())) == [guestpass.key_id(good)]
    for nothing in (None, b"", b"{", b"[]"):
        assert guestpass.keys_from_nvs(nothing) == {}


def test_the_nvs_partition_takes_the_keys_and_refuses_bad_ones() -> None:
    record = nvs_record_of([KEY.public_key(), OTHER_KEY.public_key()])
    content = nvs.DeviceNvs(DEVICE, "a-password", "mqtts://mqtt.example.com", guest_keys=record)
    assert ("guest_keys", record) in content.entries()
    assert "guest_keys" in nvs.csv_text(content)
    for bad in (b"{", b"{}", b'{"x": "AAAA"}'):
        with pytest.raises(ToolError, match="guest keys"):
            nvs.DeviceNvs(DEVICE, "a-password", "mqtts://mqtt.example.com", guest_keys=bad)


# --- a simulated charger with no cloud link ----------------------------------------------------


def guest_charger(broker: MemoryBroker, charger: SimCharger) -> SimCharger:
    charger.storage.put(nvs.GUEST_KEYS, nvs_record_of([KEY.public_key()]))
    require_rfid(broker)
    charger.run_for(1_000)
    return charger


def test_a_guest_charges_offline_and_the_session_is_reported_when_the_link_returns(
    charger: SimCharger, broker: MemoryBroker
) -> None:
    guest_charger(broker, charger)
    broker.outage()  # the link is down: no broker connection
    offline_from = charger.clock.now_ms()
    charger.ev.plug_in(target_wh=50_000)
    charger.run_for(2_000)
    assert not charger.master.charger.in_session  # rfid_required: nothing without a pass
    assert charger.start_with_guest_credential(credential()) is None
    charger.run_for(30_000)
    assert charger.plant.contactor and not charger.master.link.up
    assert charger.master.charger.session_tag == GUEST
    charger.ev.unplug()
    charger.run_for(2_000)
    assert events(broker, "charging.started") == []  # nothing reached the cloud yet
    broker.restore()
    charger.run_for(400_000)
    sessions = [
        (e.type, e.data["id_tag"], e.ts >= offline_from)
        for e in events(broker)
        if e.type in ("charging.started", "charging.stopped")
    ]
    assert sessions == [("charging.started", GUEST, True), ("charging.stopped", GUEST, True)]
    assert events(broker, "charging.stopped")[0].data["energy_wh"] > 10


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: credential(start=NOW - 2 * HOUR, end=NOW - HOUR), "expired"),
        (lambda: credential(start=NOW + HOUR, end=NOW + 2 * HOUR), "not_yet_valid"),
        (lambda: credential(charger="CHG-0002"), "other_charger"),
        (lambda: tampered(credential()), "bad_signature"),
        (lambda: credential(key=OTHER_KEY), "unknown_key"),
    ],
    ids=["expired", "not-yet-valid", "another-charger", "tampered", "unknown-key-id"],
)
def test_refused_credentials_start_nothing_offline(
    charger: SimCharger, broker: MemoryBroker, make: Callable[[], str], reason: str
) -> None:
    guest_charger(broker, charger)
    broker.outage()
    charger.ev.plug_in(target_wh=50_000)
    charger.run_for(2_000)
    got = charger.start_with_guest_credential(make())
    assert got == reason
    charger.run_for(10_000)
    assert not charger.master.charger.in_session and not charger.plant.contactor
    broker.restore()
    charger.run_for(60_000)
    [refused] = events(broker, "authorization.refused")
    assert refused.data["reason"] == got
    tag = GUEST if got in ("expired", "not_yet_valid", "other_charger") else "gst-unverified"
    assert refused.data["id_tag"] == tag


def test_without_keys_in_nvs_no_credential_is_honoured(
    charger: SimCharger, broker: MemoryBroker
) -> None:
    require_rfid(broker)
    charger.run_for(1_000)
    charger.ev.plug_in(target_wh=5_000)
    charger.run_for(2_000)
    assert charger.start_with_guest_credential(credential()) == "unknown_key"


def test_the_nvs_command_writes_the_keys_the_charger_reads_back(tmp_path: Path) -> None:
    record = nvs_record_of([KEY.public_key()])
    (tmp_path / "keys.json").write_bytes(record + b"\n")  # as `jq -r .nvs_record` leaves it
    (tmp_path / "password").write_text("a-password\n")
    out = tmp_path / "dev.bin"
    args = ["firmware", "nvs", "--device-id", DEVICE, "--password-file", str(tmp_path / "password")]
    args += ["--broker-url", "mqtts://mqtt.example.com", "--out", str(out)]
    done = CliRunner().invoke(main, [*args, "--guest-keys", str(tmp_path / "keys.json")])
    assert done.exit_code == 0, done.output
    items = nvs_reader.read(out.read_bytes())
    stored = items[(nvs.NAMESPACE, nvs.GUEST_KEYS)].value
    assert guestpass.Verifier(DEVICE, guestpass.keys_from_nvs(stored)).check(
        credential(), START_MS
    ) == (GUEST, None)
    (tmp_path / "bad.json").write_text('{"x": "AAAA"}')
    refused = CliRunner().invoke(main, [*args, "--guest-keys", str(tmp_path / "bad.json")])
    assert refused.exit_code == 2 and "--guest-keys" in refused.output
