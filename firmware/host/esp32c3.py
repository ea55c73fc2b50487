"""A simulated ESP32-C3 board at the esptool boundary, for factory tests and demos.

It answers the esptool command lines ``firmware.tools.flashing`` spells (``read-mac``,
``erase-flash``, ``write-flash OFFSET FILE ...``) from its own eFuse MAC and 4 MiB of flash,
printing what esptool prints, and refuses what esptool would refuse (another chip, a write past
the flash, an odd number of offset/file arguments). Its state lives in a directory, so one
board survives several commands, as a board on a USB port does:

* ``board.json``: ``{"mac": "58:CF:79:..", "slaves": {"meter": "58:CF:79:..", ...}}`` (the slave
  MCUs, each reachable on its own "port" named after its node);
* ``flash.bin``: the flash, 0xFF when erased;
* ``secure/key.pem``: the key the board made for itself (``make_csr``): on the device, never
  read by the station.

``SimulatedBoard.create(directory, device_seed)`` makes one with the MACs a ``SimCharger`` of
that id announces (firmware/host/charger.py ``unique_id``), so an enrolled simulated board and
the simulated charger that then runs agree on their hardware IDs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from firmware.host.charger import unique_id
from firmware.tools import ToolError
from firmware.tools.partitions import CHIP, FLASH_SIZE


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02X}" for b in raw)


class SimulatedBoard:
    """One board (master and slaves) in ``directory``; ``run`` is a station's ``Esptool``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        state = json.loads((self.directory / "board.json").read_text())
        self.mac: str = state["mac"]
        self.slaves: dict[str, str] = dict(state.get("slaves", {}))
        self.commands: list[list[str]] = []

    @classmethod
    def create(
        cls, directory: Path, seed: str, nodes: tuple[str, ...] = ("meter", "relay")
    ) -> SimulatedBoard:
        """A factory-new board whose MCUs have the ids a simulated charger ``seed`` has."""
        directory.mkdir(parents=True, exist_ok=True)
        state = {
            "mac": _mac(unique_id(seed, "master")),
            "slaves": {node: _mac(unique_id(seed, node)) for node in nodes},
        }
        (directory / "board.json").write_text(json.dumps(state, indent=1) + "\n")
        # The flash will hold the NVS, with a key when the station made it: the owner's only.
        fd = os.open(directory / "flash.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as flash:
            flash.write(b"\xff" * FLASH_SIZE)
        return cls(directory)

    # --- the esptool boundary --------------------------------------------------------------

    def run(self, command: list[str]) -> str:
        """Answer one esptool command line as esptool would (its output), or ToolError."""
        self.commands.append(list(command))
        args = command[command.index("esptool") + 1 :] if "esptool" in command else command
        options: dict[str, str] = {}
        while args and args[0].startswith("--"):
            options[args[0]] = args[1]
            args = args[2:]
        if options.get("--chip", CHIP) != CHIP:
            raise ToolError(f"esptool: this chip is an {CHIP}, not {options['--chip']}")
        port = options.get("--port", "")
        if not args:
            raise ToolError("esptool: no command")
        verb, rest = args[0], args[1:]
        if verb == "read-mac":
            mac = self.slaves.get(port, self.mac)
            return f"Chip is ESP32-C3 (QFN32) (revision v0.4)\nMAC: {mac}\nHard resetting...\n"
        if port in self.slaves:
            raise ToolError("esptool: the simulated slave boards only answer read-mac")
        if verb == "erase-flash":
            self._flash_write(0, b"\xff" * FLASH_SIZE)
            return "Chip erase completed successfully\n"
        if verb == "write-flash":
            if not rest or len(rest) % 2:
                raise ToolError("esptool write-flash: give OFFSET FILE pairs")
            for offset, file in zip(rest[::2], rest[1::2], strict=True):
                data = Path(file).read_bytes()
                self._flash_write(int(offset, 0), data)
            return "Hash of data verified.\nHard resetting via RTS pin...\n"
        raise ToolError(f"esptool: the simulated board does not know {verb!r}")

    def _flash_write(self, offset: int, data: bytes) -> None:
        if offset < 0 or offset + len(data) > FLASH_SIZE:
            raise ToolError(f"esptool: {len(data)} bytes at {offset:#x} run past the flash")
        with open(self.directory / "flash.bin", "r+b") as flash:
            flash.seek(offset)
            flash.write(data)

    def read_flash(self, offset: int, size: int) -> bytes:
        """What the flash holds at ``offset`` (a test's view, as esptool read-flash)."""
        with open(self.directory / "flash.bin", "rb") as flash:
            flash.seek(offset)
            return flash.read(size)

    # --- a key made on the board -----------------------------------------------------------

    def make_csr(self, device_id: str) -> str:
        """Make the board's key pair (kept in ``secure/``, 0600) and return its CSR."""
        from firmware.tools.station import make_key_and_csr

        key_pem, csr = make_key_and_csr(device_id)
        secure = self.directory / "secure"
        secure.mkdir(mode=0o700, exist_ok=True)
        path = secure / "key.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key_pem)
        return csr

    def public_key_pem(self) -> bytes:
        """The public half of the board's own key (to check a certificate against it)."""
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(
            (self.directory / "secure" / "key.pem").read_bytes(), None
        )
        return key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
