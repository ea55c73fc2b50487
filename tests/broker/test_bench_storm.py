"""Smoke test of ``scripts/bench_enrollment.py``'s storm, 20 chargers (about 3 s): so that the
benchmark keeps running as the code under it changes. What it checks on the way is real: the
platform PKI's device certificates admitted by a Mosquitto that requires a client certificate,
the revoked ones refused through the CRL the PKI writes. Its timings are not tested."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_enrollment.py"


def test_a_small_storm_admits_the_good_certificates_and_refuses_the_revoked() -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--part", "storm", "--devices", "20", "--revoked", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "18 of 18 connected (CONNACK)" in run.stdout, run.stdout
    assert "gave up: 0; revoked refused: 2 of 2, admitted: 0" in run.stdout, run.stdout
