"""Over-the-air update: the A/B state machine behind ``af/{id}/ota`` and ``af/{id}/ota/status``.

I/O-free: the master opens the download, writes the inactive partition and reboots; this module
decides, checks and reports. Its ``statuses`` list holds (version, state, progress, reason) for
``contract.encode_ota_status`` (device contract 4.7/4.8); ``record`` is what must survive a
reboot (the master keeps it in NVS)::

    idle --offer--> downloading --EOF--> verifying --ok--> switching --bootable--> rebooting
      ^                 |                    |                                          |
      +---- failed -----+------ failed ------+                                     (reboot)
      |                                                                                 v
      +---- confirmed <--- healthy (cloud reached) --- pending_verify --timeout--> rollback

States reported on the wire: downloading (progress every 10 % at most), verifying, installed
(partition marked bootable), confirmed (the new image reached the cloud, or the offer is the
version already running), failed and rolled_back with a reason:

=====================  =====================================================================
reason                 meaning
=====================  =====================================================================
too_large              the image is larger than the OTA partition
signature_required     this device only takes signed images and the offer has no signature
no_signature_key       the offer is signed but this device has no key to check it with
download_failed        the download broke off (network, HTTP error)
write_failed           the partition could not be written
size_mismatch          the download was not ``size`` bytes long
digest_mismatch        the SHA-256 of the image is not the offer's
bad_signature          the signature does not verify
switch_failed          the partition could not be made bootable
not_confirmed          (rolled_back) the new image did not reach the cloud within confirm_ms
boot_failed            (rolled_back) the bootloader went back to the old image by itself
=====================  =====================================================================

A failed offer is not retried until the offer changes or the device reboots (contract 4.7). An
image that was rolled back is blocked for good (the ``blocked`` record survives reboots): the
cloud's retained offer would otherwise make the old image install the broken one again at every
reconnect.

NVS record (``record``), one of::

    {"state": "pending",     "version", "sha256", "from"}   new image written, not confirmed
    {"state": "rolled_back", "version", "sha256", "from", "reason"}   going back, and why
    {"state": "blocked",     "version", "sha256"}           rolled back: never install again
"""

import binascii
import hashlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

IDLE = "idle"
DOWNLOADING = "downloading"
VERIFYING = "verifying"
SWITCHING = "switching"
REBOOTING = "rebooting"
PENDING_VERIFY = "pending_verify"

TOO_LARGE = "too_large"
SIGNATURE_REQUIRED = "signature_required"
NO_SIGNATURE_KEY = "no_signature_key"
DOWNLOAD_FAILED = "download_failed"
WRITE_FAILED = "write_failed"
SIZE_MISMATCH = "size_mismatch"
DIGEST_MISMATCH = "digest_mismatch"
BAD_SIGNATURE = "bad_signature"
SWITCH_FAILED = "switch_failed"
NOT_CONFIRMED = "not_confirmed"
BOOT_FAILED = "boot_failed"

CONFIRM_MS = 300000  # five minutes to reach the cloud after booting a new image


class Updater:
    """One device's OTA state. ``running`` is the firmware version this image is."""

    __slots__ = (
        "confirm_ms",
        "deadline_ms",
        "hasher",
        "max_size",
        "offer",
        "previous",
        "previous_sha",
        "progress",
        "received",
        "record",
        "refused",
        "require_signature",
        "running",
        "state",
        "statuses",
        "verify",
    )

    def __init__(
        self,
        running: str,
        max_size: int,
        require_signature: bool = False,
        verify: "Any" = None,
        confirm_ms: int = CONFIRM_MS,
    ) -> None:
        self.running = running
        self.max_size = max_size
        self.require_signature = require_signature
        # verify(sha256_hex, signature) -> bool; the board's key check (None: no key).
        self.verify = verify
        self.confirm_ms = confirm_ms
        self.state = IDLE
        self.offer = None  # type: Any  # the contract.Ota being installed or verified
        self.previous = None  # type: str | None  # version to roll back to, when pending
        self.previous_sha = None  # type: str | None  # sha256 of the image being verified
        self.hasher = None  # type: Any
        self.received = 0
        self.progress = -1
        self.deadline_ms = 0
        # (version, sha256) not to install again, newest last
        self.refused = []  # type: list[tuple[str, str | None]]
        self.record = None  # type: dict[str, object] | None  # what NVS must hold (None: nothing)
        self.statuses = []  # type: list[tuple[str, str, int | None, str | None]]

    def _status(
        self,
        version: str,
        state: str,
        progress: "int | None" = None,
        reason: "str | None" = None,
    ) -> None:
        self.statuses.append((version, state, progress, reason))

    def _fail(self, reason: str) -> None:
        offer = self.offer
        self._status(offer.version, "failed", None, reason)
        self._refuse(offer.version, offer.sha256)
        self.state = IDLE
        self.offer = None
        self.hasher = None

    def _refuse(self, version: str, sha256: "str | None") -> None:
        self.refused.append((version, sha256))
        if len(self.refused) > 4:
            self.refused.pop(0)

    # --- after a reboot ---------------------------------------------------------------------

    def boot(self, record: object, now_ms: int) -> None:
        """Resume from the NVS record after a (re)boot; sets ``record`` to what NVS keeps."""
        self.record = None
        if not record or type(record) is not dict:
            return
        state = record.get("state")
        version = record.get("version")
        sha256 = record.get("sha256")
        if type(version) is not str or not version:
            return
        if state == "pending" and version == self.running:
            self.state = PENDING_VERIFY
            self.previous = record.get("from")
            self.previous_sha = sha256
            self.deadline_ms = now_ms + self.confirm_ms
            self.offer = None
            self.record = record
            return
        if state == "pending":
            # We wrote "pending" and rebooted into the new image, yet the old one runs: the
            # bootloader rolled back (the new image crashed before confirming).
            self._status(version, "rolled_back", None, BOOT_FAILED)
        elif state == "rolled_back":
            self._status(version, "rolled_back", None, record.get("reason") or NOT_CONFIRMED)
        elif state != "blocked":
            return
        self._refuse(version, sha256)
        self.record = {"state": "blocked", "version": version, "sha256": sha256}

    def healthy(self) -> bool:
        """The cloud was reached: confirm a pending image. True when the master must now mark
        the running partition valid (and clear the NVS record)."""
        if self.state != PENDING_VERIFY:
            return False
        self._status(self.running, "confirmed")
        self.state = IDLE
        self.record = None
        return True

    def tick(self, now_ms: int) -> bool:
        """True when the pending image missed its deadline: the master must roll back (boot
        the previous partition) and reboot; ``record`` then says why."""
        if self.state != PENDING_VERIFY or now_ms < self.deadline_ms:
            return False
        self.record = {
            "state": "rolled_back",
            "version": self.running,
            "sha256": self.previous_sha,
            "from": self.previous,
            "reason": NOT_CONFIRMED,
        }
        self.state = REBOOTING
        return True

    # --- an offer ---------------------------------------------------------------------------

    def consider(self, offer: "Any") -> bool:
        """An offer (a decoded contract.Ota) arrived: True when the master must start the
        download (``offer.url`` into the inactive partition)."""
        if self.offer is not None and (offer.version, offer.sha256) == (
            self.offer.version,
            self.offer.sha256,
        ):
            return False  # a retained redelivery of what is in progress
        if self.state in (SWITCHING, REBOOTING, PENDING_VERIFY):
            return False  # finish this one first; the retained offer comes back after reboot
        if offer.version == self.running:
            self._status(offer.version, "confirmed")
            return False
        if (offer.version, offer.sha256) in self.refused:
            return False
        self.offer = offer
        self.hasher = None
        if offer.size > self.max_size:
            self._fail(TOO_LARGE)
            return False
        if offer.signature is None and self.require_signature:
            self._fail(SIGNATURE_REQUIRED)
            return False
        if offer.signature is not None and self.verify is None:
            self._fail(NO_SIGNATURE_KEY)
            return False
        self.state = DOWNLOADING
        self.hasher = hashlib.sha256()
        self.received = 0
        self.progress = -1
        self._report_progress()
        return True

    def _report_progress(self) -> None:
        tenth = self.received * 10 // self.offer.size * 10
        if tenth > self.progress:
            self.progress = tenth
            self._status(self.offer.version, "downloading", min(tenth, 100))

    def feed(self, chunk: "Any") -> bool:
        """One downloaded chunk (the master writes it to the partition). False when the update
        failed and the download must stop."""
        if self.state != DOWNLOADING:
            return False
        self.received += len(chunk)
        if self.received > self.offer.size:
            self._fail(SIZE_MISMATCH)
            return False
        self.hasher.update(chunk)
        self._report_progress()
        return True

    def abort(self, reason: str) -> None:
        """The download or the partition write broke (download_failed, write_failed...)."""
        if self.state in (DOWNLOADING, VERIFYING, SWITCHING):
            self._fail(reason)

    def finish(self) -> bool:
        """The download ended: check size, digest and signature. True when the master must
        now make the new partition bootable (then call ``switched``)."""
        if self.state != DOWNLOADING:
            return False
        offer = self.offer
        self.state = VERIFYING
        self._status(offer.version, "verifying")
        if self.received != offer.size:
            self._fail(SIZE_MISMATCH)
            return False
        digest = binascii.hexlify(self.hasher.digest()).decode()
        self.hasher = None
        if digest != offer.sha256:
            self._fail(DIGEST_MISMATCH)
            return False
        if offer.signature is not None and not self.verify(digest, offer.signature):
            self._fail(BAD_SIGNATURE)
            return False
        self.state = SWITCHING
        return True

    def switched(self) -> None:
        """The new partition boots next: report installed; the master reboots when it may
        (not in the middle of a charging session) with ``record`` saved."""
        if self.state != SWITCHING:
            return
        offer = self.offer
        self._status(offer.version, "installed")
        self.record = {
            "state": "pending",
            "version": offer.version,
            "sha256": offer.sha256,
            "from": self.running,
        }
        self.state = REBOOTING

    @property
    def busy(self) -> bool:
        """True while an image is being downloaded or checked."""
        return self.state in (DOWNLOADING, VERIFYING, SWITCHING)
