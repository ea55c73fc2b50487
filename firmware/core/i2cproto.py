"""The master <-> slave register protocol on the charger's I2C bus: frames, CRC, retries.

I/O-free: the master side (``Client``) talks to any ``bus`` object with ``write(address, data)``
and ``read(address, nbytes)`` (``firmware.hal``: machine.I2C on the board, a simulated bus on the
host); the slave side is two pure functions (``decode_request``, ``encode_response``).

One transaction is one I2C write (the request) followed by one I2C read (the response)::

    request   [address][command][register hi][register lo][length][data: WRITE only][crc8]
    response  [address][status ][register hi][register lo][length][data: READ+OK only][crc8]

* ``address``: the slave's 7-bit address again, so that the CRC covers it (as SMBus PEC does):
  a frame garbled into another slave's address fails its check instead of being obeyed.
* ``command``: READ (0x52, "R") or WRITE (0x57, "W"); letters, not 0x00/0xFF, which is what a
  floating or shorted bus reads.
* ``register``: 16 bits big-endian (parameter bindings allow 0x0000-0xFFFF).
* ``length``: 1..MAX_DATA bytes read or written; a response echoes it, or carries 0 when it has
  no data (WRITE acknowledgements, refusals).
* ``crc8``: CRC-8/SMBUS (the SMBus PEC: polynomial 0x07, init 0x00, not reflected, no final
  XOR; check value 0xF4 for b"123456789") over every byte before it.

The master reads ``5 + length + 1`` bytes after a READ and 6 after a WRITE. A refusal is 6 bytes
long whatever was asked: the slave pads the rest of the read (I2C targets clock out 0xFF), and
the master finds the CRC where the status says it is.

Exceptions (``code`` is the wire-level name used in events and counters; ``retryable`` says
whether sending the same request again may help)::

    Exception
     +-- I2CError        code "i2c_error"
          +-- CrcError   "crc_error"   a frame failed its CRC (either way)
          +-- NoAnswerError   "no_answer"   address not acknowledged, bus timeout, slave offline
          +-- BadLengthError  "bad_length"  truncated frame, length field not the one asked for
          +-- BadFrameError   "bad_frame"   address/register echo wrong, unknown status
          +-- NackError       "nack"        the slave refused (bad register, read-only...): not
                                       retryable, and proof that the slave is alive
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

READ = 0x52
WRITE = 0x57
HEADER = 5  # address, command/status, register (2), length
MAX_DATA = 64  # the widest binding (parameters/bindings.py allows width 1-64)
MIN_ADDRESS = 0x08  # 7-bit addresses reserved by the I2C specification (UM10204 3.1.12)
MAX_ADDRESS = 0x77

# Response status codes.
OK = 0x00
BAD_REGISTER = 0x01  # no such register block on this slave
READ_ONLY = 0x02  # a WRITE touched a register that only the slave writes
BAD_LENGTH = 0x03  # length 0, too long, or not the payload's size
BAD_CRC = 0x04  # the request arrived corrupted: the master retries
BAD_COMMAND = 0x05
BAD_VALUE = 0x06  # the slave's own check refused the value written

STATUS_NAMES = {
    OK: "ok",
    BAD_REGISTER: "bad_register",
    READ_ONLY: "read_only",
    BAD_LENGTH: "bad_length",
    BAD_CRC: "bad_crc",
    BAD_COMMAND: "bad_command",
    BAD_VALUE: "bad_value",
}


def _crc_table() -> bytes:
    table = bytearray(256)
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table[byte] = crc
    return bytes(table)


_CRC_TABLE = _crc_table()  # 256 bytes: cheaper than eight shifts per byte on the C3


def crc8(data: "Any", crc: int = 0) -> int:
    """CRC-8/SMBUS of ``data`` (poly 0x07, init 0, no reflection, no XOR out)."""
    table = _CRC_TABLE
    for byte in data:
        crc = table[crc ^ byte]
    return crc


# --- errors -----------------------------------------------------------------------------------


class I2CError(Exception):
    """A failed register transaction; ``code`` names the failure on the wire and in events."""

    code = "i2c_error"
    retryable = True

    def __init__(self, detail: "str | None" = None, address: "int | None" = None):
        super().__init__(detail)
        self.detail = detail
        self.address = address

    def __str__(self) -> str:
        text = self.code
        if self.address is not None:
            text += f" from 0x{self.address:02x}"
        if self.detail:
            text += ": " + self.detail
        return text


class CrcError(I2CError):
    """A request or a response failed its CRC-8 (noise on the bus)."""

    code = "crc_error"


class NoAnswerError(I2CError):
    """Nobody acknowledged the address, or the bus timed out."""

    code = "no_answer"


class BadLengthError(I2CError):
    """A frame too short, or a length that is not the one asked for."""

    code = "bad_length"


class BadFrameError(I2CError):
    """A frame that passed its CRC but answers another address, register or command."""

    code = "bad_frame"


class NackError(I2CError):
    """The slave understood the request and refused it; ``status`` says why."""

    code = "nack"
    retryable = False

    def __init__(self, status: int, address: "int | None" = None):
        super().__init__(STATUS_NAMES.get(status, f"status {status}"), address)
        self.status = status


# --- frames -----------------------------------------------------------------------------------


def _check_target(address: int, register: int, length: int) -> None:
    if not MIN_ADDRESS <= address <= MAX_ADDRESS:
        raise ValueError("I2C address out of 0x08-0x77")
    if not 0 <= register <= 0xFFFF:
        raise ValueError("register out of 0x0000-0xFFFF")
    if not 1 <= length <= MAX_DATA:
        raise BadLengthError(f"length {length} outside 1-{MAX_DATA}", address)


def _frame(address: int, code: int, register: int, length: int, data: "Any") -> bytes:
    frame = bytearray(HEADER + len(data) + 1)
    frame[0] = address
    frame[1] = code
    frame[2] = register >> 8
    frame[3] = register & 0xFF
    frame[4] = length
    frame[HEADER : HEADER + len(data)] = data
    frame[-1] = crc8(memoryview(frame)[:-1])
    return bytes(frame)


def encode_read(address: int, register: int, length: int) -> bytes:
    """The request frame that reads ``length`` bytes from ``register`` of slave ``address``."""
    _check_target(address, register, length)
    return _frame(address, READ, register, length, b"")


def encode_write(address: int, register: int, data: "Any") -> bytes:
    """The request frame that writes ``data`` at ``register`` of slave ``address``."""
    _check_target(address, register, len(data))
    return _frame(address, WRITE, register, len(data), data)


def response_size(command: int, length: int) -> int:
    """How many bytes the master reads back after a request."""
    return HEADER + (length if command == READ else 0) + 1


def decode_response(frame: "Any", address: int, command: int, register: int, length: int) -> bytes:
    """The data of a response to (command, register, length) from ``address``; raises I2CError."""
    if len(frame) < HEADER + 1:
        raise BadLengthError(f"response of {len(frame)} bytes", address)
    status = frame[1]
    size = HEADER + 1
    if status == OK and command == READ:
        size += length
    if len(frame) < size:
        raise BadLengthError(f"response of {len(frame)} bytes, expected {size}", address)
    if crc8(memoryview(frame)[: size - 1]) != frame[size - 1]:
        raise CrcError("response", address)
    if status == BAD_CRC:  # before the echo: what the slave echoes is the garbled register
        raise CrcError("request, as the slave received it", address)
    if frame[0] != address or (frame[2] << 8 | frame[3]) != register:
        raise BadFrameError("echo of another address or register", address)
    if status != OK:
        if status not in STATUS_NAMES:
            raise BadFrameError(f"unknown status 0x{status:02x}", address)
        raise NackError(status, address)
    expected = length if command == READ else 0
    if frame[4] != expected:
        raise BadLengthError(f"length field {frame[4]}, expected {expected}", address)
    return bytes(frame[HEADER : size - 1])


class Request:
    """A request as a slave decoded it (``data`` is b"" for a READ)."""

    __slots__ = ("command", "data", "length", "register")

    def __init__(self, command: int, register: int, length: int, data: bytes) -> None:
        self.command = command
        self.register = register
        self.length = length
        self.data = data


def decode_request(frame: "Any", address: int) -> "Request | int | None":
    """Slave side: a Request, a status code to refuse with, or None when not addressed to us."""
    if len(frame) < HEADER + 1:
        return BAD_LENGTH
    command = frame[1]
    size = HEADER + 1 + (frame[4] if command == WRITE else 0)
    if len(frame) < size or crc8(memoryview(frame)[: size - 1]) != frame[size - 1]:
        return BAD_CRC  # length byte garbled or data hit: either way the CRC cannot hold
    if frame[0] != address:
        return None
    if command not in (READ, WRITE):
        return BAD_COMMAND
    length = frame[4]
    if not 1 <= length <= MAX_DATA:
        return BAD_LENGTH
    register = frame[2] << 8 | frame[3]
    return Request(command, register, length, bytes(frame[HEADER : size - 1]))


def encode_response(address: int, status: int, register: int, data: "Any" = b"") -> bytes:
    """Slave side: the response frame; ``data`` only with status OK to a READ."""
    return _frame(address, status, register, len(data), data)


def error_response(address: int, status: int, frame: "Any") -> bytes:
    """Slave side: a refusal that echoes the register of ``frame`` when it has one."""
    register = frame[2] << 8 | frame[3] if len(frame) >= 4 else 0
    return encode_response(address, status, register)


# --- the master side --------------------------------------------------------------------------


class RetryPolicy:
    """How hard the master tries: ``retries`` more attempts per transaction, then the slave is
    offline; an offline slave gets one probe attempt every ``probe_ms`` until it answers."""

    __slots__ = ("probe_ms", "retries")

    def __init__(self, retries: int = 2, probe_ms: int = 5000) -> None:
        self.retries = retries
        self.probe_ms = probe_ms


DEFAULT_POLICY = RetryPolicy()


class Slave:
    """What the master knows about one slave: its node id, address, health and error counts."""

    __slots__ = ("address", "errors", "last_error", "next_probe_ms", "node", "online")

    def __init__(self, node: str, address: int) -> None:
        self.node = node
        self.address = address
        self.online = True  # optimistic until the first transaction says otherwise
        self.last_error = None  # type: str | None
        self.next_probe_ms = 0
        # code -> count, created on the first error
        self.errors = None  # type: dict[str, int] | None

    def count(self, code: str) -> None:
        """Count one failed attempt."""
        if self.errors is None:
            self.errors = {}
        self.errors[code] = self.errors.get(code, 0) + 1


class Client:
    """The master's side of the protocol over one bus, for any number of slaves.

    ``transitions`` collects ``(node, online, error_code)`` each time a slave goes offline or
    comes back; the master turns them into ``node.offline``/``node.online`` events.
    """

    __slots__ = ("bus", "policy", "slaves", "transitions")

    def __init__(self, bus: "Any", policy: "RetryPolicy | None" = None) -> None:
        self.bus = bus
        self.policy = policy or DEFAULT_POLICY
        self.slaves = {}  # type: dict[int, Slave]
        self.transitions = []  # type: list[tuple[str, bool, str | None]]

    def add(self, node: str, address: int) -> Slave:
        """Register a slave at ``address`` (node id from the parameter schema)."""
        if not MIN_ADDRESS <= address <= MAX_ADDRESS:
            raise ValueError("I2C address out of 0x08-0x77")
        slave = Slave(node, address)
        self.slaves[address] = slave
        return slave

    def ready(self, address: int, now_ms: int) -> bool:
        """False while an offline slave's next probe is not due: do not spend bus time on it."""
        slave = self.slaves[address]
        return slave.online or now_ms >= slave.next_probe_ms

    def read(self, address: int, register: int, length: int, now_ms: int) -> bytes:
        """``length`` bytes from ``register`` of a slave, retried by the policy; or I2CError."""
        request = encode_read(address, register, length)
        return self._transact(address, request, READ, register, length, now_ms)

    def write(self, address: int, register: int, data: "Any", now_ms: int) -> None:
        """Write ``data`` at ``register`` of a slave, retried by the policy; or I2CError."""
        request = encode_write(address, register, data)
        self._transact(address, request, WRITE, register, len(data), now_ms)

    def _transact(
        self, address: int, request: bytes, command: int, register: int, length: int, now: int
    ) -> bytes:
        slave = self.slaves[address]
        attempts = 1 + self.policy.retries if slave.online else 1  # a probe is one attempt
        size = response_size(command, length)
        error = None  # type: I2CError | None
        for _ in range(attempts):
            try:
                self.bus.write(address, request)
                data = decode_response(
                    self.bus.read(address, size), address, command, register, length
                )
            except OSError as exc:  # machine.I2C: ENODEV (no ACK) or ETIMEDOUT
                error = NoAnswerError("bus: " + str(exc), address)
            except I2CError as exc:
                if not exc.retryable:  # it answered: alive, but retrying will not change its mind
                    slave.count(exc.code)
                    self._mark(slave, True, None)
                    raise
                error = exc
            else:
                self._mark(slave, True, None)
                return data
            slave.count(error.code)
        assert error is not None
        slave.last_error = error.code
        slave.next_probe_ms = now + self.policy.probe_ms
        self._mark(slave, False, error.code)
        raise error

    def _mark(self, slave: Slave, online: bool, code: "str | None") -> None:
        if slave.online != online:
            slave.online = online
            self.transitions.append((slave.node, online, code))
