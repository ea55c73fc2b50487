"""A simulated I2C bus: slave applications at their addresses, with fault injection.

The bus carries the frames of firmware/core/i2cproto.py unchanged between the master's
``Client`` and each slave's ``Slave.handle``; faults are injected where the real ones happen:

* ``corrupt_next(count, address=None, side="response")`` flips one bit in the next ``count``
  frames (the response the master reads, or the request the slave receives) — noise, which
  the CRC must catch;
* ``silence(address)`` makes a slave stop acknowledging its address (unplugged, crashed,
  bus stuck), ``restore(address)`` brings it back.
"""

from __future__ import annotations

import errno
from typing import Any, Protocol

from firmware.hal.interface import I2CBus
from firmware.host.clock import SimClock


class FrameHandler(Protocol):
    """What sits at an address: firmware/slave/main.py ``Slave``."""

    address: int

    def handle(self, frame: Any, now_ms: int) -> bytes | None:
        """The response to a request frame (None: not for this address)."""
        ...


class SimBus(I2CBus):
    """The master's bus in a simulated charger."""

    __slots__ = ("_corrupt", "_pending", "_silent", "clock", "corrupted", "slaves", "transactions")

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.slaves: dict[int, FrameHandler] = {}
        self._pending: dict[int, bytes] = {}
        self._silent: set[int] = set()
        self._corrupt: list[Any] | None = None  # [remaining, address or None, side]
        self.transactions = 0
        self.corrupted = 0

    def attach(self, slave: FrameHandler) -> None:
        """Put a slave on the bus at its address."""
        self.slaves[slave.address] = slave

    # --- faults -----------------------------------------------------------------------------

    def corrupt_next(
        self, count: int = 1, address: int | None = None, side: str = "response"
    ) -> None:
        """Flip a bit in the next ``count`` frames to ``address`` (any when None)."""
        if side not in ("response", "request"):
            raise ValueError("side is 'response' or 'request'")
        self._corrupt = [count, address, side] if count > 0 else None

    def silence(self, address: int) -> None:
        """The slave at ``address`` stops answering."""
        self._silent.add(address)

    def restore(self, address: int) -> None:
        """The slave at ``address`` answers again."""
        self._silent.discard(address)

    def _take_corruption(self, address: int, side: str) -> bool:
        corrupt = self._corrupt
        if corrupt is None or corrupt[2] != side or corrupt[1] not in (None, address):
            return False
        corrupt[0] -= 1
        if corrupt[0] <= 0:
            self._corrupt = None
        self.corrupted += 1
        return True

    # --- the I2CBus interface ---------------------------------------------------------------

    def _slave(self, address: int) -> FrameHandler:
        slave = self.slaves.get(address)
        if slave is None or address in self._silent:
            raise OSError(errno.ENODEV, f"no ACK from 0x{address:02x}")
        return slave

    def write(self, address: int, data: Any) -> None:
        """The master writes a request frame; the slave computes its response."""
        slave = self._slave(address)
        self.transactions += 1
        frame = bytearray(data)
        if frame and self._take_corruption(address, "request"):
            frame[len(frame) // 2] ^= 0x10
        response = slave.handle(bytes(frame), self.clock.now_ms())
        if response is None:
            raise OSError(errno.ENODEV, f"no ACK from 0x{address:02x}")
        self._pending[address] = response

    def read(self, address: int, nbytes: int) -> bytes:
        """The master reads the response; an I2C target clocks out 0xFF past its data."""
        self._slave(address)
        response = bytearray(self._pending.pop(address, b""))
        response = response[:nbytes] + b"\xff" * max(0, nbytes - len(response))
        if self._take_corruption(address, "response"):
            response[min(len(response) - 1, 5)] ^= 0x01
        return bytes(response)
