"""Where rejected messages and flagged values go: counted, logged (rate-limited) and kept in a
dead-letter file an operator can read (``<data_dir>/rejected.jsonl``, rotated)."""

from __future__ import annotations

import dataclasses
import json
import logging
import logging.handlers
import time
from pathlib import Path
from typing import Protocol

from cloud.devicelink.metrics import FLAGGED, REJECTED

log = logging.getLogger(__name__)
EXCERPT = 256  # bytes of payload kept: enough to see why, too little to flood a disk


@dataclasses.dataclass(frozen=True, slots=True)
class Rejected:
    """Why a message was refused: a reason code (a metric label) and the field, if one."""

    reason: str
    field: str | None
    detail: str


class Flag(Protocol):
    """One value of an accepted message that a check refused (ingest's schema check makes them)."""

    @property
    def parameter(self) -> str:
        """The value's name."""
        ...

    @property
    def reason(self) -> str:
        """A reason code (a metric label)."""
        ...

    @property
    def detail(self) -> str:
        """A readable explanation."""
        ...


class RejectLog:
    """Counts, logs and keeps rejected messages."""

    def __init__(self, path: Path, logs_per_minute: int = 30) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = logging.handlers.RotatingFileHandler(
            path, maxBytes=10_000_000, backupCount=5, encoding="utf-8"
        )
        self._budget = logs_per_minute
        self._window = 0.0
        self._logged = 0
        self.counts: dict[str, int] = {}  # rejected messages by reason
        self.flags: dict[str, int] = {}  # flagged values by reason

    def reject(self, channel: str, topic: str, payload: bytes, why: Rejected) -> None:
        """Record one rejected message."""
        REJECTED.labels(channel, why.reason).inc()
        self.counts[why.reason] = self.counts.get(why.reason, 0) + 1
        excerpt = payload[:EXCERPT].decode("utf-8", "backslashreplace")
        record = {
            "at": round(time.time(), 3),
            "topic": topic[:200],
            "reason": why.reason,
            "field": why.field,
            "detail": why.detail,
            "bytes": len(payload),
            "payload": excerpt,
        }
        self._keep(record)
        if self._may_log():
            log.warning(
                "rejected %s: %s (%s) payload=%r", topic[:200], why.reason, why.detail, payload[:64]
            )

    def flag(self, topic: str, node: str, value: object, flag: Flag) -> None:
        """Record one value of an accepted sample that its schema refused."""
        FLAGGED.labels(flag.reason).inc()
        self.flags[flag.reason] = self.flags.get(flag.reason, 0) + 1
        record = {
            "at": round(time.time(), 3),
            "topic": topic[:200],
            "flagged": True,  # the sample was stored without this value
            "reason": flag.reason,
            "field": f"values.{flag.parameter}",
            "node": node,
            "detail": flag.detail,
            "value": value,
        }
        self._keep(record)
        if self._may_log():
            log.warning(
                "flagged %s %s: %s (%s)", topic[:200], flag.parameter, flag.reason, flag.detail
            )

    def _keep(self, record: dict[str, object]) -> None:
        self._file.emit(logging.makeLogRecord({"msg": json.dumps(record), "args": None}))

    def _may_log(self) -> bool:
        """Rate limit: a flood of bad messages must not become a flood of log lines."""
        now = time.monotonic()
        if now - self._window > 60:
            self._window, self._logged = now, 0
        if self._logged < self._budget:
            self._logged += 1
            return True
        return False

    def close(self) -> None:
        """Close the dead-letter file."""
        self._file.close()
