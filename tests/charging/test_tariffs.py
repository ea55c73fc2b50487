"""The cost core: windows validated by name, energy split over local-time windows (DST included),
cents rounded once. Properties are checked over seeded random sessions, so a failure replays."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from cloud.billing import tariffs
from cloud.billing.tariffs import TariffError, Window

UTC = dt.UTC
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]


def local(zone: str, *args: int, fold: int = 0) -> dt.datetime:
    """A local wall-clock time of ``zone`` as aware UTC."""
    return dt.datetime(*args, tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)  # type: ignore[misc]


def windows(*specs: tuple[str, str, str]) -> tuple[Window, ...]:
    return tariffs.parse_windows([{"start": s, "end": e, "price_per_kwh": p} for s, e, p in specs])


NIGHT = windows(("22:00", "06:00", "0.1800"))


# -- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ("22:00-06:00", "windows"),
        ([{"start": "22:00", "end": "06:00", "price_per_kwh": "0.18"}] * 49, "windows"),
        (["22:00"], "windows.0"),
        ([{"start": "25:00", "end": "06:00", "price_per_kwh": "0.18"}], "windows.0.start"),
        ([{"start": "24:00", "end": "06:00", "price_per_kwh": "0.18"}], "windows.0.start"),
        ([{"start": "7:00", "end": "08:00", "price_per_kwh": "0.18"}], "windows.0.start"),
        ([{"start": "07:00", "end": "08:60", "price_per_kwh": "0.18"}], "windows.0.end"),
        ([{"start": "07:00", "end": 800, "price_per_kwh": "0.18"}], "windows.0.end"),
        ([{"start": "07:00", "end": "07:00", "price_per_kwh": "0.18"}], "windows.0.end"),
        ([{"start": "07:00", "end": "08:00", "price_per_kwh": "-1"}], "windows.0.price_per_kwh"),
        (
            [{"start": "07:00", "end": "08:00", "price_per_kwh": "0.12345"}],
            "windows.0.price_per_kwh",
        ),
        ([{"start": "07:00", "end": "08:00", "price_per_kwh": "cheap"}], "windows.0.price_per_kwh"),
        ([{"start": "07:00", "end": "08:00", "price_per_kwh": True}], "windows.0.price_per_kwh"),
        ([{"start": "07:00", "end": "08:00", "price_per_kwh": [0.18]}], "windows.0.price_per_kwh"),
        ([{"start": "07:00", "end": "08:00", "price_per_kwh": "NaN"}], "windows.0.price_per_kwh"),
        ([{"start": "07:00", "end": "08:00"}], "windows.0.price_per_kwh"),
        ([{"start": "07:00", "end": "08:00", "price_per_kwh": "1", "x": 1}], "windows.0.x"),
        (
            [
                {"start": "22:00", "end": "06:00", "price_per_kwh": "0.18"},
                {"start": "05:00", "end": "07:00", "price_per_kwh": "0.25"},
            ],
            "windows.1",
        ),
        (
            [
                {"start": "12:00", "end": "14:00", "price_per_kwh": "0.25"},
                {"start": "08:00", "end": "18:00", "price_per_kwh": "0.18"},
            ],
            "windows.1",
        ),
        (
            [
                {"start": "23:00", "end": "01:00", "price_per_kwh": "0.18"},
                {"start": "22:00", "end": "02:00", "price_per_kwh": "0.25"},
            ],
            "windows.1",
        ),
    ],
)
def test_bad_windows_are_refused_naming_the_field(raw: object, field: str) -> None:
    with pytest.raises(TariffError) as refused:
        tariffs.parse_windows(raw)
    assert refused.value.field == field, refused.value


def test_every_field_at_fault_is_named_at_once() -> None:
    raw = [
        {"start": "07:00", "end": "08:00", "price_per_kwh": "0.10"},
        {"start": "9", "end": "99:00", "price_per_kwh": "-1", "colour": "red"},
        {"end": "08:00", "price_per_kwh": "0.10"},
    ]
    with pytest.raises(TariffError) as refused:
        tariffs.parse_windows(raw)
    assert refused.value.errors == {
        "windows.1.colour": "unknown field",
        "windows.1.start": "expected a time of day HH:MM from 00:00 to 23:59",
        "windows.1.end": "expected a time of day HH:MM from 00:00 to 24:00",
        "windows.1.price_per_kwh": "must be between 0 and 999999.9999",
        "windows.2.start": "missing",
    }
    assert refused.value.field == "windows.1.colour"


def test_good_windows_are_normalised() -> None:
    parsed = tariffs.parse_windows(
        [
            {"start": "06:00", "end": "08:00", "price_per_kwh": "0.25"},
            {"start": "22:00", "end": "06:00", "price_per_kwh": "0.18"},
        ]
    )
    assert tariffs.windows_json(parsed) == [
        {"start": "06:00", "end": "08:00", "price_per_kwh": "0.2500"},
        {"start": "22:00", "end": "06:00", "price_per_kwh": "0.1800"},
    ]
    # Touching windows do not overlap; 24:00 ends one at midnight.
    touching = windows(
        ("18:00", "24:00", "0.4"), ("00:00", "06:00", "0.1"), ("06:00", "18:00", "0.2")
    )
    assert [w.label for w in touching] == ["18:00-24:00", "00:00-06:00", "06:00-18:00"]
    with pytest.raises(TariffError, match="timezone"):
        tariffs.zone("Mars/Olympus_Mons")


# -- splitting and pricing ----------------------------------------------------------------------
def test_a_night_tariff_splits_the_evening_session_by_its_time_in_each_price() -> None:
    start = local("Europe/Berlin", 2026, 6, 1, 21, 0)
    stop = local("Europe/Berlin", 2026, 6, 1, 23, 0)
    costing = tariffs.price_session(Decimal("0.3000"), NIGHT, "Europe/Berlin", start, stop, 10_000)
    split = {(p.window.label if p.window else "base"): p.energy_wh for p in costing.portions}
    assert split == {"base": Decimal(5000), "22:00-06:00": Decimal(5000)}
    assert costing.cost_cents == 5 * 30 + 5 * 18  # 5 kWh at 0.30 + 5 kWh at 0.18


def test_windows_are_local_times_of_the_site() -> None:
    # 21:00-23:00 UTC is 23:00-01:00 in Berlin (summer): all of it in the night window.
    start = dt.datetime(2026, 6, 1, 21, 0, tzinfo=UTC)
    stop = dt.datetime(2026, 6, 1, 23, 0, tzinfo=UTC)
    berlin = tariffs.price_session(Decimal("0.30"), NIGHT, "Europe/Berlin", start, stop, 1000)
    in_utc = tariffs.price_session(Decimal("0.30"), NIGHT, "UTC", start, stop, 1000)
    assert berlin.cost_cents == 18 and in_utc.cost_cents == 24  # 0.5 kWh at each price in UTC


def test_an_hour_that_does_not_exist_is_empty_and_one_that_happens_twice_counts_twice() -> None:
    early = windows(("02:00", "03:00", "0.1000"))
    # Berlin, 29 March 2026: 02:00 jumps to 03:00. 01:00-04:00 local lasts two real hours.
    start = local("Europe/Berlin", 2026, 3, 29, 1, 0)
    stop = local("Europe/Berlin", 2026, 3, 29, 4, 0)
    assert stop - start == dt.timedelta(hours=2)
    spring = tariffs.split_energy(Decimal("0.30"), early, "Europe/Berlin", start, stop, 2000)
    assert [(p.window, p.energy_wh) for p in spring] == [(None, Decimal(2000))]
    # 25 October 2026: 03:00 goes back to 02:00. 01:00-04:00 local lasts four real hours, two
    # of them showing 02:xx on the wall clock.
    start = local("Europe/Berlin", 2026, 10, 25, 1, 0)
    stop = local("Europe/Berlin", 2026, 10, 25, 4, 0)
    assert stop - start == dt.timedelta(hours=4)
    autumn = tariffs.split_energy(Decimal("0.30"), early, "Europe/Berlin", start, stop, 4000)
    by_window = {p.window: (p.seconds, p.energy_wh) for p in autumn}
    assert by_window[early[0]] == (Decimal(7200), Decimal(2000))
    assert by_window[None] == (Decimal(7200), Decimal(2000))


def test_cents_are_rounded_once_half_up_at_the_end() -> None:
    # Two portions of half a cent each: one cent in all (rounding each would say two).
    halves = windows(("12:00", "13:00", "1.0000"))
    start = dt.datetime(2026, 1, 5, 11, 0, tzinfo=UTC)
    stop = dt.datetime(2026, 1, 5, 13, 0, tzinfo=UTC)
    costing = tariffs.price_session(Decimal("1.0000"), halves, "UTC", start, stop, 10)
    assert [p.cost_cents for p in costing.portions] == [Decimal("0.5"), Decimal("0.5")]
    assert costing.cost_cents == 1
    # Half up, not to even: 5 Wh at 1.00/kWh is 0.5 cents, billed as 1.
    assert tariffs.price_session(Decimal("1"), (), "UTC", start, stop, 5).cost_cents == 1
    assert tariffs.price_session(Decimal("1"), (), "UTC", start, stop, 4).cost_cents == 0


def test_a_session_of_no_duration_takes_the_price_at_its_start() -> None:
    moment = local("Europe/Berlin", 2026, 6, 1, 23, 30)
    costing = tariffs.price_session(Decimal("0.30"), NIGHT, "Europe/Berlin", moment, moment, 1000)
    assert costing.cost_cents == 18
    # A stop before its start (a confused clock) is no duration at the stop.
    earlier = moment - dt.timedelta(hours=3)  # 20:30 local: the base price
    flipped = tariffs.price_session(Decimal("0.30"), NIGHT, "Europe/Berlin", moment, earlier, 1000)
    assert flipped.cost_cents == 30


# -- properties over random sessions ------------------------------------------------------------
def random_windows(rng: random.Random) -> tuple[Window, ...]:
    """Up to four non-overlapping windows on a 15-minute grid, some crossing midnight."""
    edges = sorted(rng.sample(range(0, 24 * 60, 15), 2 * rng.randint(0, 4)))
    shift = rng.choice([0, 0, 60 * rng.randint(1, 23)])  # rotate: the last one may cross 00:00
    specs = []
    for low, high in zip(edges[::2], edges[1::2], strict=True):
        start, end = (low + shift) % 1440, (high + shift) % 1440 or 1440
        price = Decimal(rng.randint(0, 9999)) / 10000
        specs.append(
            {
                "start": f"{start // 60:02d}:{start % 60:02d}",
                "end": f"{end // 60:02d}:{end % 60:02d}",
                "price_per_kwh": str(price),
            }
        )
    return tariffs.parse_windows(specs)


def random_session(rng: random.Random) -> tuple[dt.datetime, dt.datetime, Decimal]:
    # Around the 2026 DST changes of both hemispheres, lasting seconds to three days.
    base = rng.choice(
        [
            dt.datetime(2026, 3, 28, tzinfo=UTC),
            dt.datetime(2026, 4, 4, tzinfo=UTC),
            dt.datetime(2026, 10, 3, tzinfo=UTC),
            dt.datetime(2026, 10, 24, tzinfo=UTC),
            dt.datetime(2026, 11, 1, tzinfo=UTC),
            dt.datetime(2026, 7, 1, tzinfo=UTC),
        ]
    )
    start = base + dt.timedelta(
        seconds=rng.randint(0, 3 * 86400), microseconds=rng.randint(0, 999_999)
    )
    stop = start + dt.timedelta(seconds=rng.choice([0, 1, 59, 3600, rng.randint(1, 3 * 86400)]))
    energy = Decimal(rng.randint(0, 200_000)) / rng.choice([1, 10, 1000])
    return start, stop, energy


CASES = range(300)
MICRO = dt.timedelta(microseconds=1)


@pytest.mark.parametrize("seed", CASES)
def test_the_split_adds_up_to_the_whole_energy_and_duration(seed: int) -> None:
    rng = random.Random(seed)
    zone, found = rng.choice(ZONES), random_windows(rng)
    start, stop, energy = random_session(rng)
    base = Decimal(rng.randint(0, 9999)) / 10000
    portions = tariffs.split_energy(base, found, zone, start, stop, energy)
    assert sum(p.energy_wh for p in portions) == energy
    assert sum(p.seconds for p in portions) == Decimal((stop - start) // MICRO) / 1_000_000
    assert all(p.energy_wh >= 0 for p in portions)
    assert len({p.window for p in portions}) == len(portions)
    for p in portions:  # each portion's price is its window's, or the base
        assert p.price_per_kwh == (base if p.window is None else p.window.price_per_kwh)


@pytest.mark.parametrize("seed", CASES)
def test_a_session_inside_one_window_costs_energy_times_its_price(seed: int) -> None:
    rng = random.Random(seed)
    zone = rng.choice(ZONES)
    price = Decimal(rng.randint(0, 9999)) / 10000
    found = tariffs.parse_windows([{"start": "08:00", "end": "20:00", "price_per_kwh": str(price)}])
    day = dt.date(2026, 1, 1) + dt.timedelta(days=rng.randint(0, 364))
    opens = dt.datetime.combine(day, dt.time(8)) + dt.timedelta(minutes=rng.randint(0, 600))
    start = opens.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    stop = start + dt.timedelta(minutes=rng.randint(0, 119))
    energy = Decimal(rng.randint(0, 50_000))
    costing = tariffs.price_session(Decimal("9.9999"), found, zone, start, stop, energy)
    assert [p.window for p in costing.portions] == [found[0]]
    assert costing.cost_cents == (energy * price / 10).quantize(
        Decimal(1), rounding="ROUND_HALF_UP"
    )


@pytest.mark.parametrize("seed", range(100))
def test_each_portion_is_the_time_the_wall_clock_showed_inside_its_window(seed: int) -> None:
    # Brute force: walk the session minute by minute in UTC and ask the wall clock.
    rng = random.Random(seed)
    zone, found = rng.choice(ZONES), random_windows(rng)
    start = random_session(rng)[0].replace(second=0, microsecond=0)
    stop = start + dt.timedelta(minutes=rng.randint(1, 36 * 60))
    portions = tariffs.split_energy(Decimal(1), found, zone, start, stop, Decimal(1))
    minutes: dict[Window | None, int] = {}
    moment = start
    while moment < stop:
        wall = moment.astimezone(ZoneInfo(zone))
        minute = wall.hour * 60 + wall.minute
        window = next((w for w in found if w.contains(minute)), None)
        minutes[window] = minutes.get(window, 0) + 1
        moment += dt.timedelta(minutes=1)
    assert {p.window: p.seconds for p in portions} == {
        w: Decimal(60 * m) for w, m in minutes.items()
    }


@pytest.mark.parametrize("seed", range(100))
def test_cutting_a_session_in_two_keeps_its_exact_cost(seed: int) -> None:
    rng = random.Random(seed)
    zone, found = rng.choice(ZONES), random_windows(rng)
    start, _, _ = random_session(rng)
    stop = start + dt.timedelta(seconds=rng.randint(2, 2 * 86400))
    cut = start + (stop - start) * rng.random()
    cut = min(max(cut.replace(microsecond=0), start + dt.timedelta(seconds=1)), stop)
    energy = Decimal(rng.randint(1, 100_000))
    total = tariffs.split_energy(Decimal("0.3"), found, zone, start, stop, energy)
    share = energy * Decimal((cut - start) // MICRO) / Decimal((stop - start) // MICRO)
    first = tariffs.split_energy(Decimal("0.3"), found, zone, start, cut, share)
    second = tariffs.split_energy(Decimal("0.3"), found, zone, cut, stop, energy - share)
    whole = sum(p.cost_cents for p in total)
    parts = sum(p.cost_cents for p in first + second)
    # Equal but for the nano-Wh to which shares are cut.
    assert abs(whole - parts) < Decimal("1e-6")


def test_window_prices_may_be_json_numbers_and_keep_their_digits() -> None:
    """Issue 13: 0.18 is read through its shortest repr, never as 0.17999999999999999."""
    [window] = tariffs.parse_windows([{"start": "22:00", "end": "06:00", "price_per_kwh": 0.18}])
    assert window.price_per_kwh == Decimal("0.1800")
    assert tariffs.parse_price(0.1234, "price_per_kwh") == Decimal("0.1234")
    assert tariffs.parse_price(7, "price_per_kwh") == Decimal("7.0000")
