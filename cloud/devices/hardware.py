"""The hardware IDs a board announces against the set bound at enrollment: I/O-free.

The master reports its own chip id and the unique id of every slave that answered on its I2C
bus at boot (contract 4.2 ``hw``). A difference is a swapped, added or missing board: the
status worker quarantines the device (``cloud.devices.quarantine``) and raises an alarm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import Counter

HARDWARE_MISMATCHES = Counter(
    "ampfleet_hardware_mismatches",
    "Devices quarantined because the hardware IDs they announced differ from the enrolled "
    "ones (a swapped board): alert on any increase.",
)

#: The ``hw`` object of a status (contract 4.2), as decoded.
Announced = Mapping[str, Any]


def differences(
    enrolled_chip: str | None,
    enrolled_slaves: Sequence[str] | None,
    reported: Announced | None,
) -> list[str]:
    """What differs, in words (empty: the same hardware, or nothing enrolled to compare).

    ``reported`` is the status's ``hw`` (``{"chip": id, "slaves": {node: id}}``) or None when
    the status carried none: a device enrolled with hardware IDs must announce them.
    """
    if enrolled_chip is None and enrolled_slaves is None:
        return []
    if reported is None:
        return ["no hardware IDs announced"]
    found: list[str] = []
    chip = reported.get("chip")
    if enrolled_chip is not None and chip != enrolled_chip:
        found.append(f"master chip {enrolled_chip} -> {chip or 'none'}")
    if enrolled_slaves is not None:
        slaves: Mapping[str, str] = reported.get("slaves") or {}
        expected = set(enrolled_slaves)
        by_id = {uid: node for node, uid in slaves.items()}
        missing = sorted(expected - set(by_id))
        unknown = sorted(set(by_id) - expected)
        if missing:
            found.append("missing slave " + ", ".join(missing))
        if unknown:
            found.append("unknown slave " + ", ".join(f"{by_id[uid]}={uid}" for uid in unknown))
    return found
