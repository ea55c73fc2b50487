"""A slave MCU: serves its register map over I2C (firmware/core/i2cproto.py frames).

``Slave(family, node)`` builds the register memory of one node from the parameter schema (its
i2c-bound parameters) plus the role's private block (firmware/core/registers.py), and answers
request frames with ``handle(frame, now_ms)``. I/O-free like the core: the bus side is the
board's I2C target (firmware/hal/esp32.py) or the host's simulated bus, and the measuring side is
a ``sensors`` object with two methods::

    refresh(slave, now_ms)                   write fresh measurements into the registers
    written(slave, register, data, now_ms)   after an accepted write: act on it (contactor)

``refresh`` runs before every read when ``refresh_on_read`` (the host simulation: readings are
exact at the moment they are read); on the board the main loop refreshes on its own schedule,
because an I2C target must answer within the transaction, not after sampling its ADCs.

Writes are accepted only into registers the master may write: settings, commands and the
private block's writable registers; anything else is refused with READ_ONLY, an unknown
register with BAD_REGISTER. Reads may span holes between registers (they read as zero), which
is what lets the master fetch a whole poll group in one transaction.
"""

from firmware.core import i2cproto, registers

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Slave:
    """The register file and request handling of one slave node."""

    __slots__ = (
        "address",
        "family",
        "memory",
        "node",
        "private",
        "refresh_on_read",
        "requests",
        "sensors",
        "writable",
    )

    def __init__(
        self,
        family: "Any",
        node: str,
        sensors: "Any" = None,
        refresh_on_read: bool = True,
        unique_id: "bytes | None" = None,
    ) -> None:
        """``unique_id``: this MCU's unique id (machine.unique_id() on the board), served
        read-only in the identity block (registers.IDENTITY) for the master to announce."""
        address = family.address_of(node)
        if address is None:
            raise ValueError(node + " is the master, not a slave")
        role = "slave"
        for node_id, _, node_role in family.nodes:
            if node_id == node:
                role = node_role
        self.family = family
        self.node = node
        self.address = address
        self.sensors = sensors
        self.refresh_on_read = refresh_on_read
        private = {}  # type: dict
        private.update(registers.PRIVATE.get(role, {}))
        private.update(registers.IDENTITY)
        self.private = private
        self.requests = 0
        size = 0
        spans = []
        for param in family.register_map(node):
            spans.append((param.register, param.width, param.kind in ("setting", "command")))
        for register, width, _, can_write in self.private.values():
            spans.append((register, width, can_write))
        for register, width, _ in spans:
            size = max(size, register + width)
        writable = bytearray(size)  # 1 where the master may write that byte
        for register, width, can_write in spans:
            if can_write:
                for index in range(register, register + width):
                    writable[index] = 1
        self.writable = bytes(writable)
        self.memory = bytearray(size)
        if unique_id is not None:
            if len(unique_id) != registers.UNIQUE_ID_BYTES:
                raise ValueError("unique_id must be " + str(registers.UNIQUE_ID_BYTES) + " bytes")
            start = registers.IDENTITY_BLOCK[0]
            self.memory[start : start + len(unique_id)] = unique_id

    def set(self, parameter_id: str, value: "Any") -> None:
        """Store a schema parameter's engineering value in its register (sensors use it)."""
        param = self.family.params[parameter_id]
        self.memory[param.register : param.register + param.width] = param.encode(value)

    def get(self, parameter_id: str) -> "Any":
        """A schema parameter's value as its register holds it."""
        param = self.family.params[parameter_id]
        return param.decode(self.memory, param.register)

    def set_private(self, name: str, value: int) -> None:
        """Store a private register (registers.py)."""
        register, width, _, _ = self.private[name]
        self.memory[register : register + width] = registers.pack(value, width)

    def get_private(self, name: str) -> int:
        """A private register's integer value."""
        entry = self.private[name]
        return registers.unpack(self.memory, 0, entry)

    def handle(self, frame: "Any", now_ms: int) -> "bytes | None":
        """The response to one request frame; None when the frame is for another address."""
        self.requests += 1
        request = i2cproto.decode_request(frame, self.address)
        if request is None:
            return None
        if isinstance(request, int):  # a status to refuse with
            return i2cproto.error_response(self.address, request, frame)
        register = request.register
        end = register + request.length
        if end > len(self.memory):
            return i2cproto.encode_response(self.address, i2cproto.BAD_REGISTER, register)
        if request.command == i2cproto.READ:
            if self.sensors is not None and self.refresh_on_read:
                self.sensors.refresh(self, now_ms)
            data = bytes(self.memory[register:end])
            return i2cproto.encode_response(self.address, i2cproto.OK, register, data)
        if len(request.data) != request.length:
            return i2cproto.encode_response(self.address, i2cproto.BAD_LENGTH, register)
        for index in range(register, end):
            if not self.writable[index]:
                return i2cproto.encode_response(self.address, i2cproto.READ_ONLY, register)
        self.memory[register:end] = request.data
        if self.sensors is not None:
            self.sensors.written(self, register, request.data, now_ms)
        return i2cproto.encode_response(self.address, i2cproto.OK, register)


def main() -> None:  # pragma: no cover - the board's entry point
    """Serve the node named in the board's config on the I2C target port, forever."""
    from firmware.core import params
    from firmware.hal import esp32 as hal

    config = hal.load_config()
    family = params.load_file(config["schema_file"])
    node = config["node"]
    sensors = hal.sensors_for(family, node, config)
    slave = Slave(family, node, sensors, refresh_on_read=False, unique_id=hal.unique_id())
    hal.serve_i2c_target(slave, config)
