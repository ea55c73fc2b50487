"""The IEC 61851-1 control pilot machine (firmware/core/charging.py)."""

from __future__ import annotations

from typing import Any

import pytest

from firmware.core import charging as ch

VOLTS = {"A": 12.0, "B": 9.0, "C": 6.0, "D": 3.0, "E": 0.0, "F": -12.0}


@pytest.mark.parametrize(
    ("volts", "state"),
    [
        (12.0, "A"), (11.2, "A"), (12.9, "A"), (9.0, "B"), (8.1, "B"), (6.0, "C"),
        (5.4, "C"), (3.0, "D"), (0.0, "E"), (0.8, "E"), (-12.0, "F"), (-11.5, "F"),
        (10.5, "E"), (7.5, "E"), (-6.0, "E"), (None, "E"),
    ],
)  # fmt: skip
def test_cp_levels(volts: float | None, state: str) -> None:
    assert ch.cp_state(volts) == state


@pytest.mark.parametrize(
    ("amps", "duty"),
    [
        (5.9, 100.0),
        (6, 10.0),
        (16, 26.67),
        (32, 53.33),
        (51, 85.0),
        (63, 89.2),
        (80, 96.0),
        (90, 96.0),
    ],
)
def test_duty_cycle_for_a_current(amps: float, duty: float) -> None:
    assert ch.duty_for_current(amps) == duty


@pytest.mark.parametrize("amps", [6, 10, 16, 20, 32, 40, 51, 63, 70, 80])
def test_ev_reads_back_the_current_offered(amps: float) -> None:
    assert ch.current_for_duty(ch.duty_for_current(amps)) == pytest.approx(amps, abs=0.01)


def test_ev_side_duty_bands() -> None:
    assert ch.current_for_duty(100.0) == 0.0  # steady +12 V: nothing offered
    assert ch.current_for_duty(5.0) == 0.0  # digital communication only
    assert ch.current_for_duty(9.0) == 6.0


class Rig:
    """Drives a Charger like the master does: one update per call."""

    def __init__(self, **options: Any) -> None:
        self.charger = ch.Charger(**options)
        self.now = 0
        self.energy: float | None = 1000.0

    def cycle(self, state: str, pp: float | None = 32, limit: float = 32, **extra: Any) -> None:
        self.now += 500
        volts = None if state == "?" else VOLTS[state]
        self.charger.update(self.now, volts, pp, limit, self.energy, **extra)

    def take(self) -> list[tuple[str, Any]]:
        events = [(kind, data) for kind, _, data in self.charger.events]
        self.charger.events = []
        return events


def test_plug_in_authorise_charge_unplug() -> None:
    rig = Rig()
    rig.cycle("A")
    assert rig.charger.duty == ch.DUTY_OFF and not rig.charger.contactor
    rig.cycle("B", auto_authorise=True)
    assert rig.charger.in_session and rig.charger.duty == 53.33
    assert rig.take() == [
        ("charging.state", {"from": "A", "to": "B"}),
        ("charging.started", {"session": "1", "connector": 1, "meter_start_wh": 1000.0}),
    ]
    rig.cycle("C")
    assert rig.charger.contactor
    rig.energy = 1500.5
    rig.cycle("C")
    assert rig.charger.session_energy_wh() == 500.5
    rig.cycle("A")
    assert not rig.charger.contactor and rig.charger.duty == ch.DUTY_OFF
    events = rig.take()
    assert events[-1] == (
        "charging.stopped",
        {
            "session": "1",
            "connector": 1,
            "meter_stop_wh": 1500.5,
            "energy_wh": 500.5,
            "duration_s": 1,
            "reason": "ev_disconnected",
        },
    )
    assert not rig.charger.authorised


def test_without_authorisation_nothing_is_offered() -> None:
    rig = Rig()
    rig.cycle("B")
    rig.cycle("C")  # an EV that asks anyway
    assert not rig.charger.contactor and rig.charger.duty == ch.DUTY_OFF
    assert rig.charger.authorise()
    rig.cycle("C")
    assert rig.charger.contactor


def test_authorisation_needs_an_ev() -> None:
    rig = Rig()
    rig.cycle("A")
    assert not rig.charger.authorise()


def test_limit_is_the_lowest_of_cable_setting_and_load_management() -> None:
    rig = Rig()
    rig.cycle("B", auto_authorise=True)
    rig.cycle("B", pp=20, limit=32)
    assert rig.charger.limit_a == 20 and rig.charger.duty == 33.33
    rig.cycle("B", pp=32, limit=16)
    assert rig.charger.limit_a == 16
    rig.cycle("B", pp=32, limit=32, load_limit_a=10)
    assert rig.charger.limit_a == 10 and rig.charger.duty == 16.67
    rig.cycle("B", pp=0)  # no cable detected: nothing offered
    assert rig.charger.duty == ch.DUTY_OFF


def test_stop_gives_the_ev_its_grace_period_then_opens() -> None:
    rig = Rig()
    rig.cycle("B", auto_authorise=True)
    rig.cycle("C")
    assert rig.charger.stop(rig.now)
    rig.cycle("C")  # the EV has not reacted yet: the contactor stays closed, PWM is off
    assert rig.charger.duty == ch.DUTY_OFF and rig.charger.contactor
    for _ in range(6):
        rig.cycle("C")
    assert not rig.charger.contactor  # 3 s later, under load or not
    stopped = {
        "session": "1",
        "connector": 1,
        "meter_stop_wh": 1000.0,
        "energy_wh": 0.0,
        "duration_s": 0,
        "reason": "remote",
    }
    assert ("charging.stopped", stopped) in rig.take()
    assert not rig.charger.stop(rig.now)  # nothing left to stop


def test_ev_going_back_to_b_opens_at_once() -> None:
    rig = Rig()
    rig.cycle("B", auto_authorise=True)
    rig.cycle("C")
    rig.cycle("B")
    assert not rig.charger.contactor and rig.charger.in_session


@pytest.mark.parametrize("state", ["A", "E", "F"])
def test_states_a_e_f_open_immediately(state: str) -> None:
    rig = Rig()
    rig.cycle("B", auto_authorise=True)
    rig.cycle("C")
    rig.cycle(state)
    assert not rig.charger.contactor


def test_fault_opens_at_once_and_signals_f_until_cleared() -> None:
    rig = Rig()
    rig.cycle("B", auto_authorise=True)
    rig.cycle("C")
    rig.take()
    rig.charger.set_fault("overtemp")
    rig.cycle("C")
    assert not rig.charger.contactor and rig.charger.duty == ch.DUTY_F
    rig.cycle("F")  # what the pilot now reads
    rig.charger.set_fault(None)
    rig.cycle("F")
    assert rig.charger.duty == ch.DUTY_OFF  # back to +12 V; the EV shows itself again
    rig.cycle("B")
    rig.cycle("C")
    assert rig.charger.contactor and rig.charger.in_session  # the session survived the fault
    kinds = [kind for kind, _ in rig.take()]
    assert kinds[0] == "charging.fault" and "charging.fault_cleared" in kinds


def test_unknown_pilot_keeps_the_state() -> None:
    rig = Rig()
    rig.cycle("B", auto_authorise=True)
    rig.take()
    rig.cycle("?")
    assert rig.charger.state == "B" and rig.take() == []


def test_ventilation_state_d() -> None:
    vented = Rig(ventilation=True)
    vented.cycle("B", auto_authorise=True)
    vented.cycle("D")
    assert vented.charger.contactor
    unvented = Rig(ventilation=False)
    unvented.cycle("B", auto_authorise=True)
    unvented.cycle("D")
    assert not unvented.charger.contactor


def test_missing_ev_diode_is_state_e() -> None:
    rig = Rig()
    rig.cycle("B", auto_authorise=True, cp_low_volts=-12.0)
    rig.cycle("C", cp_low_volts=-12.0)
    assert rig.charger.contactor
    rig.cycle("C", cp_low_volts=6.0)  # the pilot no longer swings negative
    assert rig.charger.state == "E" and not rig.charger.contactor


def test_unavailable_is_state_f() -> None:
    rig = Rig()
    rig.charger.set_available(False)
    rig.cycle("B", auto_authorise=True)
    assert rig.charger.duty == ch.DUTY_F


def test_session_waits_for_a_meter_reading() -> None:
    rig = Rig()
    rig.energy = None
    rig.cycle("B", auto_authorise=True)
    assert not rig.charger.in_session and rig.charger.duty == ch.DUTY_OFF
    rig.energy = 10.0
    rig.cycle("B")
    assert rig.charger.in_session
