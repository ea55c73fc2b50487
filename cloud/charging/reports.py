"""Billing reports: the sessions of a month as CSV rows, and their totals per organization and
per user.

A month is a calendar month in **UTC**, and a session belongs to the month in which it
*stopped* (its energy and cost are final only then): the month of ``2026-11`` holds every
completed session with ``2026-11-01T00:00:00Z <= stopped_at < 2026-12-01T00:00:00Z``. Sessions
still running, failed or refused are never billed.

Figures are exact. Energy is reported in kWh with 3 decimals, i.e. the session's ``energy_wh``
rounded to the whole Wh (half up) and divided by 1000 in decimal arithmetic, never through a
binary float; costs are the stored whole cents with 2 decimals. The monthly totals add up the
same rounded figures, so they equal the sum of the export's rows to the Wh and the cent.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import re
from collections.abc import Iterable, Iterator
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.orm import Session

from cloud.access.models import RfidCard
from cloud.charging.models import ChargingSession, SessionSource, SessionState
from cloud.identity.models import User
from cloud.organizations.models import Organization, Site

_MONTH = re.compile(r"^([0-9]{4})-(0[1-9]|1[0-2])$")
BATCH = 500  # rows fetched (and CSV lines written) at a time: memory stays flat

CSV_COLUMNS = (
    "session_id",
    "charger",
    "user_email",
    "card_uid",
    "start",
    "stop",
    "reason",
    "kwh",
    "cost",
    "currency",
    # Appended (issue 13) so that the positions above stay where existing sheets expect them.
    "organization_id",
    "organization",
    "site_id",
    "site",
)
# The history export (``GET /sessions.csv``): the billing columns, then where the session is.
HISTORY_COLUMNS = (*CSV_COLUMNS, "state", "source")


def month_bounds(month: str) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the UTC month ``YYYY-MM``; ValueError when it is not one."""
    found = _MONTH.match(month)
    if found is None or int(found.group(1)) < 1:
        raise ValueError(month)
    year, number = int(found.group(1)), int(found.group(2))
    start = dt.datetime(year, number, 1, tzinfo=dt.UTC)
    if number == 12:
        if year == 9999:
            raise ValueError(month)  # its end is past what a datetime holds
        return start, dt.datetime(year + 1, 1, 1, tzinfo=dt.UTC)
    return start, dt.datetime(year, number + 1, 1, tzinfo=dt.UTC)


def month_of(moment: dt.datetime) -> str:
    """``YYYY-MM`` of ``moment`` in UTC."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m")


def whole_wh(energy_wh: float) -> int:
    """Energy rounded to the whole Wh, half up, from the float's exact value."""
    return int(Decimal(energy_wh).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def kwh_text(wh: int) -> str:
    """Whole Wh as kWh with exactly 3 decimals: 12345 -> ``12.345``."""
    return f"{Decimal(wh).scaleb(-3):.3f}"


def money_text(cents: int) -> str:
    """Whole cents with exactly 2 decimals: 1234 -> ``12.34``."""
    return f"{Decimal(cents).scaleb(-2):.2f}"


def iso_utc(moment: dt.datetime | None) -> str:
    """ISO 8601 in UTC to the second (what every records backend keeps): ``...T..:..:..Z``."""
    return "" if moment is None else moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class BillingRow:
    """One billed session, as the export and the totals see it."""

    session_id: str
    organization_id: int
    device_id: str
    user_id: int | None
    user_email: str | None
    card_uid: str | None
    started_at: dt.datetime | None
    stopped_at: dt.datetime | None
    stop_reason: str | None
    energy_wh: int
    cost_cents: int | None
    currency: str | None
    organization: str = ""  # its name
    site_id: int | None = None
    site: str | None = None  # its name
    state: str = SessionState.COMPLETED.value  # what a billed session always is
    source: str = ""

    def csv_fields(self) -> list[str]:
        """The row's cells, in ``CSV_COLUMNS`` order."""
        priced = self.cost_cents is not None
        return [
            self.session_id,
            self.device_id,
            _cell(self.user_email or ""),
            _cell(self.card_uid or ""),
            iso_utc(self.started_at),
            iso_utc(self.stopped_at),
            self.stop_reason or "",
            kwh_text(self.energy_wh),
            money_text(self.cost_cents) if self.cost_cents is not None else "",
            (self.currency or "") if priced else "",
            str(self.organization_id),
            _cell(self.organization),
            "" if self.site_id is None else str(self.site_id),
            _cell(self.site or ""),
        ]

    def history_fields(self) -> list[str]:
        """The row's cells, in ``HISTORY_COLUMNS`` order."""
        return [*self.csv_fields(), self.state, self.source]


def _cell(text: str) -> str:
    """A free-text cell a spreadsheet will not run: a leading =, +, -, @, tab or CR makes it
    a formula in Excel and LibreOffice, so it gets a leading apostrophe (OWASP CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# A session with its user's e-mail, its card's uid and its site's name (None through the outer
# joins), and its organization's name.
Billed = Select[ChargingSession, str, str, str, str]


def annotated(conditions: Iterable[ColumnElement[bool]]) -> Billed:
    """The sessions meeting ``conditions`` with the names a CSV row shows, unordered."""
    return (
        select(ChargingSession, User.email, RfidCard.uid, Organization.name, Site.name)
        .join(Organization, Organization.id == ChargingSession.organization_id)
        .outerjoin(User, User.id == ChargingSession.user_id)
        .outerjoin(RfidCard, RfidCard.id == ChargingSession.card_id)
        .outerjoin(Site, Site.id == ChargingSession.site_id)
        .where(*conditions)
    )


def billed(
    start: dt.datetime, end: dt.datetime, conditions: Iterable[ColumnElement[bool]]
) -> Billed:
    """The completed sessions that stopped in [start, end), with their user's e-mail and card
    uid, oldest stop first."""
    return annotated(
        [
            ChargingSession.state == SessionState.COMPLETED,
            ChargingSession.stopped_at >= start,
            ChargingSession.stopped_at < end,
            *conditions,
        ]
    ).order_by(ChargingSession.stopped_at, ChargingSession.id)


def billing_rows(session: Session, stmt: Billed) -> Iterator[BillingRow]:
    """The rows of ``billed`` fetched in batches."""
    rows = session.execute(stmt.execution_options(yield_per=BATCH))
    for record, email, uid, organization, site in rows:
        # A deleted card leaves its session with the uid the charger sent (its id_tag).
        card_uid = uid
        if card_uid is None and record.source is SessionSource.RFID:
            card_uid = record.id_tag
        yield BillingRow(
            session_id=record.id,
            organization_id=record.organization_id,
            device_id=record.device_id,
            user_id=record.user_id,
            user_email=email,
            card_uid=card_uid,
            started_at=record.started_at,
            stopped_at=record.stopped_at,
            stop_reason=record.stop_reason,
            energy_wh=whole_wh(record.energy_wh),
            cost_cents=record.cost_cents,
            currency=record.currency,
            organization=organization,
            site_id=record.site_id,
            site=site,
            state=record.state.value,
            source=record.source.value,
        )


def csv_chunks(rows: Iterable[BillingRow], *, history: bool = False) -> Iterator[str]:
    """The CSV text (RFC 4180: CRLF line ends, quoted where needed), header first, streamed in
    chunks of ``BATCH`` rows: the billing columns, or with ``history`` the history's."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(HISTORY_COLUMNS if history else CSV_COLUMNS)
    for written, row in enumerate(rows, 1):
        writer.writerow(row.history_fields() if history else row.csv_fields())
        if written % BATCH == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@dataclasses.dataclass
class Totals:
    """Sessions, energy and cost per currency of one organization or one user."""

    sessions: int = 0
    energy_wh: int = 0
    unpriced_sessions: int = 0
    cost_cents: dict[str, int] = dataclasses.field(default_factory=dict)
    priced_sessions: dict[str, int] = dataclasses.field(default_factory=dict)

    def add(self, row: BillingRow) -> None:
        """Count one session in."""
        self.sessions += 1
        self.energy_wh += row.energy_wh
        if row.cost_cents is None or row.currency is None:
            self.unpriced_sessions += 1
            return
        self.cost_cents[row.currency] = self.cost_cents.get(row.currency, 0) + row.cost_cents
        self.priced_sessions[row.currency] = self.priced_sessions.get(row.currency, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        """The totals as the API shows them (amounts as exact decimal strings)."""
        return {
            "sessions": self.sessions,
            "energy_wh": self.energy_wh,
            "kwh": kwh_text(self.energy_wh),
            "unpriced_sessions": self.unpriced_sessions,
            "costs": [
                {
                    "currency": currency,
                    "sessions": self.priced_sessions[currency],
                    "cost_cents": cents,
                    "cost": money_text(cents),
                }
                for currency, cents in sorted(self.cost_cents.items())
            ],
        }


def monthly_summary(rows: Iterable[BillingRow]) -> dict[str, list[dict[str, Any]]]:
    """Totals per organization and per (organization, user); sessions without a user (free
    charging, an unknown card) are totalled under ``user_id`` null."""
    organizations: dict[int, Totals] = {}
    users: dict[tuple[int, int | None], tuple[str | None, Totals]] = {}
    for row in rows:
        organizations.setdefault(row.organization_id, Totals()).add(row)
        key = (row.organization_id, row.user_id)
        if key not in users:
            users[key] = (row.user_email, Totals())
        users[key][1].add(row)
    return {
        "organizations": [
            {"organization_id": org_id, **totals.as_dict()}
            for org_id, totals in sorted(organizations.items())
        ],
        "users": [
            {"organization_id": org_id, "user_id": user_id, "email": email, **totals.as_dict()}
            for (org_id, user_id), (email, totals) in sorted(
                users.items(), key=lambda item: (item[0][0], item[0][1] is None, item[0][1] or 0)
            )
        ],
    }
