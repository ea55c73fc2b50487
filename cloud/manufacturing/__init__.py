"""Manufacturing: production batches (the whitelist), the MAC pool and enrollment.

An admin creates a production batch (organization, hardware family, serials, the MCU hardware
IDs expected per serial when known); another admin approves it. Only an approved, not yet
enrolled serial can be enrolled by a factory station: the device record is created in the
batch's organization, its CSR signed by the platform PKI, its hardware IDs recorded, a MAC
assigned from the organization's pool (or the chip's own recorded), and the device moves
``manufactured -> provisioned``. Every refusal writes nothing (one transaction).

No Flask here; the HTTP answers are chosen in ``cloud.api.errors``.

Exceptions::

    ManufacturingError               base of this package; ``field`` names the request field
     |                               at fault (or None), ``reason`` a short machine code
     +-- BatchError                  a batch that cannot be created as asked (bad serials,
     |    |                          count mismatch, unknown family)
     |    +-- SerialTakenError       a serial already in another batch or registered
     +-- StateError                  the batch or device is already in the state the action
     |    |                          would put it in (approved twice)
     |    +-- SameApproverError      the creator tried to approve their own batch
     +-- MacPoolError                a MAC range that cannot be defined (bad, overlapping)
     |    +-- MacPoolExhaustedError  no free address left for an enrollment
     |    +-- MacTakenError          the chip's own MAC is already used or inside a pool
     +-- EnrollmentError             an enrollment refused: serial unknown or not approved,
          |                          already enrolled, bad CSR, device id taken
          +-- HardwareMismatchError  the IDs read from the board are not the batch's expected
"""

from __future__ import annotations


class ManufacturingError(Exception):
    """Base of the manufacturing package's errors: a reason code, a message, the field."""

    reason = "manufacturing"

    def __init__(self, message: str, field: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if reason is not None:
            self.reason = reason


class BatchError(ManufacturingError):
    """A batch that cannot be created as asked."""

    reason = "bad_batch"


class SerialTakenError(BatchError):
    """A serial of the batch is already in another batch, or already a registered device."""

    reason = "serial_taken"


class StateError(ManufacturingError):
    """The batch or device is not in the state the action needs (approving twice)."""

    reason = "state"


class SameApproverError(StateError):
    """Four eyes: the batch's creator may not approve it."""

    reason = "same_approver"


class MacPoolError(ManufacturingError):
    """A MAC range that cannot be defined: malformed, multicast, too large, overlapping."""

    reason = "bad_mac_pool"


class MacPoolExhaustedError(MacPoolError):
    """Every address of the organization's MAC pools is assigned."""

    reason = "mac_pool_exhausted"


class MacTakenError(MacPoolError):
    """The chip's own MAC is already a device's, or lies inside a pool (it would be handed
    out twice)."""

    reason = "mac_taken"


class EnrollmentError(ManufacturingError):
    """An enrollment refused; nothing was written."""

    reason = "enrollment_refused"


class HardwareMismatchError(EnrollmentError):
    """The chip id or slave ids read from the board differ from the batch's expected ones."""

    reason = "hardware_mismatch"
