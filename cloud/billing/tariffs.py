"""The cost of a session: its energy split over a tariff's time-of-day windows. I/O-free.

A tariff has a base ``price_per_kwh`` and optional windows in the site's local time (a night
tariff: ``{"start": "22:00", "end": "06:00", "price_per_kwh": "0.1800"}``); a window whose end
is not after its start crosses midnight, ``"24:00"`` ends one at midnight, and windows must not
overlap. Energy outside every window costs the base price.

**Assumption: energy is spread evenly over the session's duration.** The cloud records a
session from two meter registers (``meter_start_wh``, ``meter_stop_wh``, contract 14), not
from the power curve, so the share of energy in a window is the share of the session's time
in it. Local times are converted with ``zoneinfo``: on a daylight-saving day a window has the
length the wall clock gave it (an hour that did not exist is empty; an hour that happened twice
counts twice), because membership is decided by the local wall-clock time of each instant.

Money is ``Decimal`` throughout; the cost in cents is rounded once, half up, at the end.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloud.billing import BillingError

MAX_WINDOWS = 48
PRICE_PLACES = 4  # Tariff.price_per_kwh is Numeric(10, 4)
MAX_PRICE = Decimal("999999.9999")
_MINUTES_PER_DAY = 24 * 60
_TIME = re.compile(r"^(?:([01]\d|2[0-3]):([0-5]\d)|(24):(00))$")
_ONE_SECOND = dt.timedelta(seconds=1)
_NANO = Decimal("1e-9")  # Wh: far below any meter, far above Decimal's 28 digits of noise


class TariffError(BillingError):
    """Tariff values that cannot be used; ``field`` names the first (``windows.1.end``),
    ``errors`` every field at fault with its message."""

    def __init__(self, field: str, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.errors = errors or {field: message}


@dataclasses.dataclass(frozen=True)
class Window:
    """A time-of-day price: minutes since local midnight, ``end`` up to 1440 (24:00)."""

    start: int
    end: int
    price_per_kwh: Decimal

    @property
    def crosses_midnight(self) -> bool:
        """True for a window such as 22:00-06:00."""
        return self.end <= self.start

    @property
    def label(self) -> str:
        """``"22:00-06:00"``."""
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"

    def contains(self, minute: float) -> bool:
        """Whether a local time of day (minutes since midnight) falls inside."""
        if self.crosses_midnight:
            return minute >= self.start or minute < self.end
        return self.start <= minute < self.end

    def spans(self) -> list[tuple[int, int]]:
        """The window as half-open minute ranges within one day (two when it crosses)."""
        if self.crosses_midnight:
            return [(self.start, _MINUTES_PER_DAY), (0, self.end)]
        return [(self.start, self.end)]

    def as_json(self) -> dict[str, str]:
        """The stored form: ``{"start": "22:00", "end": "06:00", "price_per_kwh": "0.1800"}``."""
        return {
            "start": _hhmm(self.start),
            "end": _hhmm(self.end),
            "price_per_kwh": format(self.price_per_kwh, f".{PRICE_PLACES}f"),
        }


@dataclasses.dataclass(frozen=True)
class Portion:
    """The energy a session drew at one price: in one window, or (``window`` None) the base."""

    window: Window | None
    price_per_kwh: Decimal
    seconds: Decimal
    energy_wh: Decimal

    @property
    def cost_cents(self) -> Decimal:
        """Unrounded cost of this portion in cents (Wh / 1000 x price x 100)."""
        return self.energy_wh * self.price_per_kwh / 10


@dataclasses.dataclass(frozen=True)
class Costing:
    """A session priced: its energy per window and its cost in whole cents."""

    portions: tuple[Portion, ...]
    cost_cents: Decimal


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_time(value: object, field: str, allow_24: bool = False) -> int:
    """``"HH:MM"`` as minutes since midnight (``"24:00"`` only where ``allow_24``)."""
    match = _TIME.match(value) if isinstance(value, str) else None
    if match is None or (match.group(3) and not allow_24):
        latest = "24:00" if allow_24 else "23:59"
        raise TariffError(field, f"expected a time of day HH:MM from 00:00 to {latest}")
    if match.group(3):
        return _MINUTES_PER_DAY
    return int(match.group(1)) * 60 + int(match.group(2))


def parse_price(value: object, field: str) -> Decimal:
    """A price per kWh: a decimal string or number, >= 0, at most four decimals."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise TariffError(field, 'expected a decimal number such as "0.1800"')
    try:
        price = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise TariffError(field, 'expected a decimal number such as "0.1800"') from None
    if not price.is_finite() or price < 0 or price > MAX_PRICE:
        raise TariffError(field, f"must be between 0 and {MAX_PRICE}")
    exponent = price.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -PRICE_PLACES:
        raise TariffError(field, f"at most {PRICE_PLACES} decimal places")
    return price.quantize(Decimal(1).scaleb(-PRICE_PLACES))


def parse_windows(raw: object) -> tuple[Window, ...]:
    """Validated windows from their JSON form (prices as decimal strings, as stored, or
    numbers).

    TariffError names every field at fault, so that a form can mark them all at once.
    """
    if not isinstance(raw, list | tuple):
        raise TariffError("windows", "expected a list of {start, end, price_per_kwh}")
    if len(raw) > MAX_WINDOWS:
        raise TariffError("windows", f"at most {MAX_WINDOWS} windows")
    windows: list[Window] = []
    errors: dict[str, str] = {}
    for i, item in enumerate(raw):
        try:
            windows.append(_parse_window(item, f"windows.{i}"))
        except TariffError as exc:
            errors.update(exc.errors)
    if errors:
        field, message = next(iter(errors.items()))
        raise TariffError(field, message, errors)
    _check_overlaps(windows)
    return tuple(windows)


def _parse_window(item: object, where: str) -> Window:
    if not isinstance(item, Mapping):
        raise TariffError(where, "expected an object {start, end, price_per_kwh}")
    errors: dict[str, str] = {
        f"{where}.{name}": "unknown field"
        for name in sorted(set(item) - {"start", "end", "price_per_kwh"}, key=str)
    }
    parsed: dict[str, Any] = {}
    checks: dict[str, Any] = {
        "start": lambda v, f: parse_time(v, f),
        "end": lambda v, f: parse_time(v, f, allow_24=True),
        "price_per_kwh": _window_price,
    }
    for name, check in checks.items():
        field = f"{where}.{name}"
        if name not in item:
            errors[field] = "missing"
            continue
        try:
            parsed[name] = check(item[name], field)
        except TariffError as exc:
            errors[field] = exc.message
    if "start" in parsed and parsed.get("end") == parsed["start"]:
        errors[f"{where}.end"] = "must differ from start (a window cannot be empty)"
    if errors:
        field, message = next(iter(errors.items()))
        raise TariffError(field, message, errors)
    return Window(parsed["start"], parsed["end"], parsed["price_per_kwh"])


def _window_price(value: object, field: str) -> Decimal:
    # Stored and sent as a decimal string ("0.1800"); a JSON number is read through its
    # shortest repr, exact for any price of four decimals (parse_price).
    return parse_price(value, field)


def _check_overlaps(windows: Sequence[Window]) -> None:
    spans = sorted(
        (low, high, i) for i, window in enumerate(windows) for low, high in window.spans()
    )
    for (_low, high, i), (next_low, _high, j) in itertools.pairwise(spans):
        if next_low < high:
            first, second = sorted((i, j))
            raise TariffError(
                f"windows.{second}",
                f"overlaps windows.{first} ({windows[first].label}); windows must not overlap",
            )


def windows_json(windows: Iterable[Window]) -> list[dict[str, str]]:
    """The stored form of ``windows``, sorted by start."""
    return [w.as_json() for w in sorted(windows, key=lambda w: w.start)]


def zone(name: str, field: str = "timezone") -> ZoneInfo:
    """The IANA time zone ``name``; TariffError when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise TariffError(field, f"unknown IANA time zone {name!r}") from None


def _utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: session times are aware UTC")
    return moment.astimezone(dt.UTC)


def _local_to_utc(day: dt.date, minute: int, tz: ZoneInfo, fold: int) -> dt.datetime:
    local = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=minute)
    return local.replace(tzinfo=tz, fold=fold).astimezone(dt.UTC)


def _transitions(day: dt.date, tz: ZoneInfo) -> list[dt.datetime]:
    """UTC instants (to the second) where the zone's offset changes during local ``day``."""
    low = _local_to_utc(day, 0, tz, 0)
    high = _local_to_utc(day + dt.timedelta(days=1), 0, tz, 1)
    if low.astimezone(tz).utcoffset() == high.astimezone(tz).utcoffset():
        return []  # no zone changes its offset twice in one day
    before = low.astimezone(tz).utcoffset()
    while high - low > _ONE_SECOND:
        middle = low + (high - low) / 2
        if middle.astimezone(tz).utcoffset() == before:
            low = middle
        else:
            high = middle
    return [high]


def _boundaries(
    windows: Sequence[Window], tz: ZoneInfo, start: dt.datetime, stop: dt.datetime
) -> list[dt.datetime]:
    """Every instant in (start, stop) where the window in force may change.

    A window's edge happens where the wall clock shows it: both readings of an ambiguous local
    time are taken, a non-existent one adds a harmless extra cut, and the offset changes
    themselves are cuts too (the clock jumps over edges there). Segments between cuts are then
    classified by their midpoint, which is exact whatever the zone does.
    """
    cuts = {start, stop}
    day = start.astimezone(tz).date() - dt.timedelta(days=1)
    last = stop.astimezone(tz).date() + dt.timedelta(days=1)
    edges = sorted({m for w in windows for m in (w.start, w.end % _MINUTES_PER_DAY)})
    while day <= last:
        for minute in edges:
            for fold in (0, 1):
                cuts.add(_local_to_utc(day, minute, tz, fold))
        cuts.update(_transitions(day, tz))
        day += dt.timedelta(days=1)
    return sorted(c for c in cuts if start <= c <= stop)


def window_at(windows: Sequence[Window], tz: ZoneInfo, moment: dt.datetime) -> Window | None:
    """The window in force at ``moment`` (None: the base price)."""
    local = _utc(moment).astimezone(tz)
    minute = local.hour * 60 + local.minute + (local.second + local.microsecond / 1e6) / 60
    return next((w for w in windows if w.contains(minute)), None)


def _micros(delta: dt.timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def split_energy(
    price_per_kwh: Decimal,
    windows: Sequence[Window],
    timezone: str,
    start: dt.datetime,
    stop: dt.datetime,
    energy_wh: Decimal | float | int,
) -> tuple[Portion, ...]:
    """The session's energy per window (and at the base price), in order of first use.

    Energy is assumed spread evenly over [start, stop] (see the module docstring); the
    portions add up exactly to ``energy_wh``. A session of no duration takes the price in
    force at its start; ``stop`` before ``start`` is treated as no duration at ``stop``.
    """
    tz = zone(timezone)
    start, stop = _utc(start), _utc(stop)
    start = min(start, stop)
    energy = Decimal(str(energy_wh)) if not isinstance(energy_wh, Decimal) else energy_wh
    total = _micros(stop - start)
    if total == 0:
        window = window_at(windows, tz, start)
        price = price_per_kwh if window is None else window.price_per_kwh
        return (Portion(window, price, Decimal(0), energy),)
    cuts = _boundaries(windows, tz, start, stop)
    micros: dict[Window | None, int] = {}
    for low, high in itertools.pairwise(cuts):
        length = _micros(high - low)
        if length:
            window = window_at(windows, tz, low + (high - low) / 2)
            micros[window] = micros.get(window, 0) + length
    portions: list[Portion] = []
    remaining = energy
    items = list(micros.items())
    for n, (window, length) in enumerate(items):
        # Shares are cut to a nano-Wh, so that their sums are exact; the last portion takes
        # what is left, so that the parts add up to the whole exactly.
        share = remaining if n == len(items) - 1 else (energy * length / total).quantize(_NANO)
        remaining -= share
        price = price_per_kwh if window is None else window.price_per_kwh
        portions.append(Portion(window, price, Decimal(length) / 1_000_000, share))
    return tuple(portions)


def cost_cents(portions: Iterable[Portion]) -> Decimal:
    """Whole cents: the portions' exact costs summed, then rounded once (half up)."""
    exact = sum((p.cost_cents for p in portions), Decimal(0))
    return exact.quantize(Decimal(1), rounding=ROUND_HALF_UP)


def price_session(
    price_per_kwh: Decimal,
    windows: Sequence[Window],
    timezone: str,
    start: dt.datetime,
    stop: dt.datetime,
    energy_wh: Decimal | float | int,
) -> Costing:
    """Split a session's energy over the windows and price it in whole cents."""
    portions = split_energy(price_per_kwh, windows, timezone, start, stop, energy_wh)
    return Costing(portions, cost_cents(portions))


def stored_windows(raw: Any) -> tuple[Window, ...]:
    """Windows as stored on a Tariff record (already validated when written)."""
    return parse_windows(raw or [])
