"""Simulated flash: NVS records, A/B OTA partitions with the bootloader's rollback, images and
a download server.

Simulated firmware images are bytes with a one-line header, ``make_image("1.5.0")``; the header
says which version the image is and how it behaves once booted, so that OTA can be exercised end
to end, rollbacks included:

* ``behaviour="ok"``: boots and works;
* ``"offline"``: boots but never reaches the cloud (its network code is broken): the master's
  own health check rolls back after ``ota.CONFIRM_MS``;
* ``"crash"``: resets before doing anything: the bootloader rolls back by itself, as ESP-IDF
  does with an image that is still pending verification when it resets again.

Only the header and the SHA-256 of what was written are kept, not the image: a thousand
simulated chargers updating at once do not hold a thousand images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from firmware.hal.interface import Downloader, Storage

IMAGE_MAGIC = b"AMPFW1 "
HEADER_BYTES = 256
PARTITION_BYTES = 1_900_544  # an ESP32-C3 4 MB flash with two OTA slots of 0x1D0000


def make_image(version: str, size: int = 8192, behaviour: str = "ok") -> bytes:
    """A simulated firmware image of ``size`` bytes (deterministic content)."""
    header = IMAGE_MAGIC + json.dumps({"version": version, "behaviour": behaviour}).encode() + b"\n"
    if size < len(header):
        raise ValueError("image smaller than its header")
    filler = hashlib.sha256(version.encode()).digest() * (size // 32 + 1)
    return header + filler[: size - len(header)]


def image_info(head: bytes) -> dict[str, str] | None:
    """The header of a simulated image, None for anything else."""
    if not head.startswith(IMAGE_MAGIC):
        return None
    line = head[len(IMAGE_MAGIC) :].split(b"\n", 1)[0]
    try:
        info = json.loads(line)
    except ValueError:
        return None
    return info if isinstance(info, dict) and "version" in info else None


@dataclasses.dataclass
class Slot:
    """What an OTA partition holds."""

    version: str
    behaviour: str = "ok"
    sha256: str = ""
    valid: bool = True  # confirmed by its own firmware (or the factory image)


class MemoryStorage(Storage):
    """NVS plus two OTA slots and the bootloader's choice between them."""

    def __init__(self, version: str, partition_bytes: int = PARTITION_BYTES) -> None:
        self.nvs: dict[str, bytes] = {}
        self.partition_bytes = partition_bytes
        self.slots: list[Slot | None] = [Slot(version), None]
        self.running = 0
        self.boot = 0
        self.pending_verify = False  # the running image is new and not yet marked valid
        self._writing: dict[str, Any] | None = None
        self.boots = 1
        self.flash_broken = False  # fault injection: every OTA write fails

    # --- NVS --------------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """An NVS record."""
        return self.nvs.get(key)

    def put(self, key: str, value: bytes) -> None:
        """Write an NVS record."""
        self.nvs[key] = bytes(value)

    def delete(self, key: str) -> None:
        """Erase an NVS record."""
        self.nvs.pop(key, None)

    # --- OTA --------------------------------------------------------------------------------

    def ota_max_size(self) -> int:
        """The inactive slot's size."""
        return self.partition_bytes

    def ota_begin(self, size: int) -> None:
        """Start writing the inactive slot."""
        if size > self.partition_bytes:
            raise OSError("image larger than the partition")
        self._writing = {"hash": hashlib.sha256(), "head": bytearray(), "size": 0}

    def ota_write(self, data: Any) -> None:
        """Append to the image being written."""
        if self._writing is None:
            raise OSError("ota_begin first")
        if self.flash_broken:
            raise OSError("flash write failed")
        writing = self._writing
        writing["hash"].update(data)
        writing["size"] += len(data)
        if writing["size"] > self.partition_bytes:
            raise OSError("partition full")
        head: bytearray = writing["head"]
        if len(head) < HEADER_BYTES:
            head.extend(bytes(data)[: HEADER_BYTES - len(head)])

    def ota_switch(self) -> None:
        """The slot just written boots next."""
        writing = self._writing
        self._writing = None
        info = image_info(bytes(writing["head"])) if writing else None
        if writing is None or info is None:
            raise OSError("no valid image written")  # the bootloader would refuse it too
        target = 1 - self.running
        self.slots[target] = Slot(
            info["version"], info.get("behaviour", "ok"), writing["hash"].hexdigest(), False
        )
        self.boot = target

    def ota_mark_valid(self) -> None:
        """Cancel the rollback of the running image."""
        self.running_slot.valid = True
        self.pending_verify = False

    def ota_rollback(self) -> None:
        """Boot the other slot next."""
        if self.slots[1 - self.running] is not None:
            self.boot = 1 - self.running

    # --- the bootloader ---------------------------------------------------------------------

    def reset(self) -> Slot:
        """What the bootloader does at a reset; returns the slot that now runs."""
        self.boots += 1
        if self.pending_verify and self.boot == self.running:
            # Reset again while still unconfirmed: ESP-IDF marks the image aborted and boots the
            # previous one (CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE).
            self.boot = 1 - self.running
        self.running = self.boot
        slot = self.running_slot
        self.pending_verify = not slot.valid
        return slot

    @property
    def running_slot(self) -> Slot:
        """The slot running now."""
        slot = self.slots[self.running]
        assert slot is not None
        return slot


class MemoryDownloader(Downloader):
    """A firmware server in memory: ``images[url] = bytes``; ``fail_after[url] = n`` breaks the
    download after ``n`` bytes (a dropped connection)."""

    def __init__(self) -> None:
        self.images: dict[str, bytes] = {}
        self.fail_after: dict[str, int] = {}
        self.opened = 0

    def publish(self, url: str, image: bytes) -> None:
        """Serve ``image`` at ``url``."""
        self.images[url] = image

    def open(self, url: str) -> _Stream:
        """A stream over the image; OSError (404) for an unknown URL."""
        if url not in self.images:
            raise OSError("404 " + url)
        self.opened += 1
        return _Stream(self.images[url], self.fail_after.get(url))


class _Stream:
    __slots__ = ("data", "fail_at", "position")

    def __init__(self, data: bytes, fail_at: int | None) -> None:
        self.data = data
        self.position = 0
        self.fail_at = fail_at

    def read(self, size: int) -> bytes:
        if self.fail_at is not None and self.position >= self.fail_at:
            raise OSError("connection reset")
        end = self.position + size
        if self.fail_at is not None:
            end = min(end, self.fail_at)
        chunk = self.data[self.position : end]
        self.position += len(chunk)
        return chunk

    def close(self) -> None:
        self.position = len(self.data)
