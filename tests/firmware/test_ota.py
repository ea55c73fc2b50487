"""The OTA state machine (firmware/core/ota.py): offer, download, verify, switch, confirm or
roll back, and the statuses the contract expects on ``ota/status``."""

from __future__ import annotations

import hashlib

import pytest

from firmware.core import contract, ota

IMAGE = bytes(range(256)) * 40  # 10240 bytes
SHA = hashlib.sha256(IMAGE).hexdigest()


def offer(version: str = "1.1.0", sha: str = SHA, size: int = len(IMAGE), signature=None):
    return contract.Ota(version, "https://fw.example/x.bin", sha, size, signature)


def updater(**options) -> ota.Updater:
    return ota.Updater("1.0.0", max_size=1 << 20, **options)


def download(up: ota.Updater, image: bytes = IMAGE, chunk: int = 1024) -> bool:
    for start in range(0, len(image), chunk):
        if not up.feed(image[start : start + chunk]):
            return False
    return up.finish()


def states(up: ota.Updater) -> list[tuple]:
    taken = up.statuses
    up.statuses = []
    for version, state, progress, reason in taken:  # every status must encode
        contract.encode_ota_status(version, state, progress, reason)
    return [(state, progress, reason) for _, state, progress, reason in taken]


def test_happy_path_reports_progress_every_ten_percent() -> None:
    up = updater()
    assert up.consider(offer())
    assert download(up)
    up.switched()
    assert up.state == ota.REBOOTING
    assert up.record == {"state": "pending", "version": "1.1.0", "sha256": SHA, "from": "1.0.0"}
    reported = states(up)
    assert reported[:11] == [("downloading", p, None) for p in range(0, 101, 10)]
    assert reported[11:] == [("verifying", None, None), ("installed", None, None)]


def test_after_reboot_the_new_image_confirms_once_healthy() -> None:
    up = ota.Updater("1.1.0", 1 << 20)
    up.boot({"state": "pending", "version": "1.1.0", "from": "1.0.0"}, 1000)
    assert up.state == ota.PENDING_VERIFY and up.record is not None
    assert not up.tick(1000 + ota.CONFIRM_MS - 1)
    assert up.healthy()
    assert up.record is None and up.state == ota.IDLE
    assert states(up) == [("confirmed", None, None)]
    assert not up.healthy()  # only once


def test_an_image_that_never_reaches_the_cloud_rolls_back() -> None:
    up = ota.Updater("1.1.0", 1 << 20, confirm_ms=5000)
    up.boot({"state": "pending", "version": "1.1.0", "sha256": SHA, "from": "1.0.0"}, 0)
    assert up.tick(5000)
    assert up.record == {
        "state": "rolled_back",
        "version": "1.1.0",
        "sha256": SHA,
        "from": "1.0.0",
        "reason": "not_confirmed",
    }
    old = ota.Updater("1.0.0", 1 << 20)
    old.boot(up.record, 10_000)
    assert states(old) == [("rolled_back", None, "not_confirmed")]
    assert old.state == ota.IDLE
    # The broken image is blocked, across reboots too, until the cloud offers another.
    assert old.record == {"state": "blocked", "version": "1.1.0", "sha256": SHA}
    assert not old.consider(offer())
    again = ota.Updater("1.0.0", 1 << 20)
    again.boot(old.record, 20_000)
    assert states(again) == [] and not again.consider(offer())
    assert again.consider(offer(version="1.1.1"))


def test_the_bootloader_rolling_back_is_reported_by_the_old_image() -> None:
    old = ota.Updater("1.0.0", 1 << 20)
    old.boot({"state": "pending", "version": "1.1.0", "sha256": SHA, "from": "1.0.0"}, 0)
    assert states(old) == [("rolled_back", None, "boot_failed")]
    assert not old.consider(offer())


@pytest.mark.parametrize("record", [None, {}, {"state": "pending"}, {"version": 3}, "junk"])
def test_boot_ignores_missing_or_torn_records(record) -> None:
    up = updater()
    up.boot(record, 0)
    assert up.state == ota.IDLE and states(up) == []


def test_the_running_version_is_confirmed_without_download() -> None:
    up = updater()
    assert not up.consider(offer(version="1.0.0"))
    assert states(up) == [("confirmed", None, None)]


@pytest.mark.parametrize(
    ("image", "the_offer", "reason"),
    [
        (IMAGE, offer(sha="0" * 64), "digest_mismatch"),
        (IMAGE[:-1], offer(), "size_mismatch"),
        (IMAGE + b"x", offer(), "size_mismatch"),
    ],
)
def test_verification_failures(image: bytes, the_offer, reason: str) -> None:
    up = updater()
    assert up.consider(the_offer)
    assert not download(up, image)
    assert states(up)[-1] == ("failed", None, reason)
    assert up.state == ota.IDLE


def test_refused_before_download() -> None:
    up = ota.Updater("1.0.0", max_size=100)
    assert not up.consider(offer())
    assert states(up) == [("failed", None, "too_large")]
    strict = updater(require_signature=True)
    assert not strict.consider(offer())
    assert states(strict) == [("failed", None, "signature_required")]
    keyless = updater()
    assert not keyless.consider(offer(signature="c2ln"))
    assert states(keyless) == [("failed", None, "no_signature_key")]


def test_signature_is_checked_with_the_boards_key() -> None:
    def verify(digest: str, signature: str) -> bool:
        return signature == "good:" + digest[:8]

    up = updater(verify=verify)
    assert up.consider(offer(signature="good:" + SHA[:8]))
    assert download(up)
    bad = updater(verify=verify)
    assert bad.consider(offer(signature="forged"))
    assert not download(bad)
    assert states(bad)[-1] == ("failed", None, "bad_signature")


def test_a_failed_offer_is_not_retried_until_it_changes() -> None:
    up = updater()
    assert up.consider(offer())
    up.abort(ota.DOWNLOAD_FAILED)
    assert states(up)[-1] == ("failed", None, "download_failed")
    assert not up.consider(offer())  # the retained offer again
    assert up.consider(offer(version="1.1.1"))  # a new one


def test_redelivery_of_the_offer_in_progress_is_ignored_and_a_new_one_replaces_it() -> None:
    up = updater()
    assert up.consider(offer())
    up.feed(IMAGE[:5000])
    assert not up.consider(offer())
    assert up.received == 5000
    assert up.consider(offer(version="1.2.0"))
    assert up.received == 0


def test_nothing_new_starts_while_an_image_waits_for_its_reboot() -> None:
    up = updater()
    up.consider(offer())
    download(up)
    up.switched()
    assert not up.consider(offer(version="1.3.0"))
