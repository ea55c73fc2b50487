"""Reconnect back-off with full jitter (firmware/core/backoff.py) and the offline buffer
(firmware/core/outbox.py)."""

from __future__ import annotations

import pytest

from firmware.core.backoff import Backoff
from firmware.core.outbox import Outbox
from firmware.host import XorShift

TOP = 0.999999  # a rand() at the top of [0, 1): shows each ceiling


def test_ceilings_double_up_to_the_cap() -> None:
    backoff = Backoff(lambda: TOP)
    delays = [backoff.next_delay() for _ in range(12)]
    expected = [min(300_000, 1000 * 2**n) for n in range(12)]
    assert delays == [int(TOP * e) for e in expected]
    assert backoff.next_delay() == int(TOP * 300_000)


def test_jitter_is_full_and_uniform() -> None:
    rand = XorShift(3)
    backoff = Backoff(rand)
    backoff.attempt = 5  # ceiling 32 s
    samples = []
    for _ in range(2000):
        backoff.attempt = 5
        samples.append(backoff.next_delay())
    assert min(samples) < 1000 and max(samples) > 31_000
    assert 14_000 < sum(samples) / len(samples) < 18_000


def test_power_on_wait_and_refused_credentials() -> None:
    backoff = Backoff(lambda: TOP)
    assert backoff.first_delay() < 10_000
    refused = backoff.next_delay(refused=True)
    assert 300_000 <= refused < 310_000
    assert Backoff(lambda: 0.0).next_delay(refused=True) == 300_000


def test_attempts_reset_after_a_stable_minute() -> None:
    backoff = Backoff(lambda: TOP)
    for _ in range(5):
        backoff.next_delay()
    backoff.connected(0)
    backoff.tick(59_999)
    assert backoff.attempt == 5
    backoff.tick(60_000)
    assert backoff.attempt == 0
    # A connection that drops before that keeps growing the delay.
    for _ in range(3):
        backoff.next_delay()
    backoff.connected(100_000)
    backoff.tick(130_000)
    backoff.next_delay()
    assert backoff.attempt == 4


def test_outbox_is_fifo() -> None:
    box = Outbox(capacity=4)
    for n in range(3):
        box.put("telemetry", b"%d" % n)
    assert len(box) == 3 and box.peek() == ("telemetry", b"0")
    assert [box.pop() for _ in range(4)] == [
        ("telemetry", b"0"),
        ("telemetry", b"1"),
        ("telemetry", b"2"),
        None,
    ]


def test_outbox_drops_the_oldest_and_counts() -> None:
    box = Outbox(capacity=3)
    for n in range(7):
        box.put("events", b"%d" % n)
    assert box.dropped == 4
    assert [box.pop()[1] for _ in range(3)] == [b"4", b"5", b"6"]  # type: ignore[index]
    assert box.take_dropped() == 4 and box.take_dropped() == 0


def test_outbox_is_bounded_in_bytes_too() -> None:
    box = Outbox(capacity=100, max_bytes=10)
    box.put("telemetry", b"aaaa")
    box.put("telemetry", b"bbbb")
    box.put("telemetry", b"cccc")  # 12 bytes: the oldest goes
    assert box.size == 8 and box.dropped == 1 and box.peek() == ("telemetry", b"bbbb")
    box.put("telemetry", b"x" * 11)  # can never fit
    assert box.dropped == 2 and len(box) == 2


def test_outbox_releases_its_ring_when_drained() -> None:
    box = Outbox(capacity=8)
    assert box.main._items is None and box.sessions._items is None
    box.put("telemetry", b"x")
    box.put("events", b"y", must_deliver=True)
    assert box.main._items is not None and box.sessions._items is not None
    box.pop()
    box.pop()
    assert box.main._items is None and box.sessions._items is None and box.size == 0
    with pytest.raises(ValueError):
        Outbox(capacity=0)


def test_session_events_have_their_own_ring() -> None:
    """Telemetry cannot push session events out; the replay keeps the order they were put in."""
    box = Outbox(capacity=2, session_capacity=2)
    box.put("telemetry", b"t0")
    box.put("events", b"started", must_deliver=True)
    for n in range(1, 5):
        box.put("telemetry", b"t%d" % n)  # pushes out telemetry only
    box.put("events", b"stopped", must_deliver=True)
    assert len(box) == 4 and box.dropped == 3 and box.session_dropped == 0
    assert [box.pop() for _ in range(5)] == [
        ("events", b"started"),
        ("telemetry", b"t3"),
        ("telemetry", b"t4"),
        ("events", b"stopped"),
        None,
    ]
    for n in range(3):
        box.put("events", b"%d" % n, must_deliver=True)
    assert box.session_dropped == 1 and box.dropped == 3
    assert box.take_session_dropped() == 1 and box.take_session_dropped() == 0
    assert box.take_dropped() == 3
