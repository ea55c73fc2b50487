"""`ampfleet simulate`: enrols its chargers like real ones, once, and reuses them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

AMPFLEET = str(Path(sys.executable).parent / "ampfleet")


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [AMPFLEET, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_simulate_enrols_its_chargers_once_and_keeps_their_passwords_private(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "AMPFLEET_DATA_DIR": str(tmp_path),
        "AMPFLEET_TESTING": "true",
        "AMPFLEET_PASSWORD_KDF": "insecure-fast-for-tests",
        "AMPFLEET_BROKER_URL": "mqtt://127.0.0.1:9",  # nothing listens: enrolment only
    }
    run(env, "db", "upgrade")
    first = run(env, "simulate", "--devices", "2", "--duration", "0.2")
    assert "2 simulated chargers enrolled (2 new credentials)" in first.stderr
    fleet = tmp_path / "simulator" / "fleet.json"
    assert sorted(json.loads(fleet.read_text())) == ["sim-00001", "sim-00002"]
    assert stat.S_IMODE(fleet.stat().st_mode) == 0o600
    again = run(env, "simulate", "--devices", "3", "--duration", "0.2")
    assert "3 simulated chargers enrolled (1 new credentials)" in again.stderr
