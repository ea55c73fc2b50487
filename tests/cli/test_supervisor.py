"""`ampfleet up`'s supervisor on small stand-in processes: the restart back-off, a killed
child restarted while the others keep running, the stop order; and its broker probe (an MQTT
CONNECT) against the real brokers."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cloud.cli.serve import mqtt_ping
from cloud.cli.supervisor import Child, Supervisor, restart_delay
from tests.link import Link
from tests.services.mosquitto import free_port

# Says it is ready (its pid), waits for SIGTERM, then notes its name (the stop order).
STAND_IN = """
import os, signal, sys, time
def bye(*_):
    with open(sys.argv[1], "a") as out:
        out.write(sys.argv[2] + "\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
with open(sys.argv[1] + ".ready", "a") as out:
    out.write(f"{os.getpid()}\\n")
while True:
    time.sleep(0.05)
"""


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_back_off_doubles_from_one_second_to_thirty() -> None:
    assert [restart_delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_a_killed_child_is_restarted_and_the_stop_follows_the_stages(tmp_path: Path) -> None:
    stopped = tmp_path / "stopped"

    def child(name: str, stage: int) -> Child:
        argv = [sys.executable, "-c", STAND_IN, str(stopped), name]
        return Child(name, argv, stage=stage, stop_timeout=10)

    def ready() -> list[str]:
        marks = Path(f"{stopped}.ready")
        return marks.read_text().split() if marks.exists() else []

    said: list[str] = []
    # Started in this order, stopped by stage: devices, then broker, then workers.
    children = [child("broker", 1), child("worker", 2), child("devices", 0)]
    supervisor = Supervisor(children, say=said.append)
    runner = threading.Thread(target=supervisor.run)
    runner.start()
    try:
        wait_for(lambda: all(c.running() for c in children), "every child started")
        wait_for(lambda: len(ready()) == 3, "every stand-in ready")
        pids = {c.name: c.pid for c in children}
        os.kill(pids["worker"], signal.SIGKILL)
        wait_for(lambda: children[1].running() and children[1].pid != pids["worker"], "restart")
        assert said[0] == f"worker exited with {-signal.SIGKILL}; restarting in 1 s"
        assert {c.name: c.pid for c in children if c.name != "worker"} == {
            "broker": pids["broker"],
            "devices": pids["devices"],
        }
        wait_for(lambda: len(ready()) == 4, "the new stand-in ready")
    finally:
        supervisor.stopping = True
        runner.join(60)
    assert not runner.is_alive()
    assert stopped.read_text().split() == ["devices", "broker", "worker"]
    assert said[-2:] == ["stopping devices, broker, worker", "stopped"]
    assert not any(c.running() for c in children)


def test_a_child_that_ignores_sigterm_is_killed_after_its_timeout(tmp_path: Path) -> None:
    stubborn = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)"
    child = Child("stubborn", [sys.executable, "-c", stubborn], stage=0, stop_timeout=0.5)
    said: list[str] = []
    supervisor = Supervisor([child], say=said.append)
    supervisor._start(child)
    time.sleep(0.5)
    supervisor.stop()
    assert child.process is not None and child.process.returncode == -signal.SIGKILL
    assert "the stubborn did not stop: killed" in said


def test_the_broker_probe_is_a_real_mqtt_connect(link: Link) -> None:
    endpoint = link.endpoint()
    assert mqtt_ping(endpoint)
    assert not mqtt_ping(dataclasses.replace(endpoint, password="not-the-password"))
    assert not mqtt_ping(dataclasses.replace(endpoint, port=free_port()))


def test_the_children_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """kill -9 of `ampfleet up` itself leaves no child holding the ports of the next start."""
    script = (
        "import sys\n"
        "from cloud.cli.supervisor import Child, Supervisor\n"
        f"argv = [sys.executable, '-c', {STAND_IN!r}, {str(tmp_path / 'stopped')!r}, 'x']\n"
        "Supervisor([Child('stand-in', argv, stage=0)], say=print).run()\n"
    )
    supervisor = subprocess.Popen([sys.executable, "-c", script])
    ready = Path(f"{tmp_path / 'stopped'}.ready")
    wait_for(lambda: ready.exists() and bool(ready.read_text().split()), "the child ready")
    child = int(ready.read_text().split()[0])
    supervisor.kill()
    supervisor.wait()

    def gone() -> bool:
        try:  # dead, or a zombie its new parent has not reaped yet
            return Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    wait_for(gone, "the child to end")
    assert (tmp_path / "stopped").read_text().split() == ["x"]  # by SIGTERM, cleanly


def test_up_runs_each_worker_on_a_plain_persistent_subscription() -> None:
    """One worker of each kind: no shared subscription, which Mosquitto does not queue for
    across its own restart (docs/delivery.md), whatever broker `up` is pointed at."""
    from cloud.cli.serve import platform_children
    from cloud.settings import Settings

    for broker in ("embedded", "external"):
        settings = Settings.load({"broker": broker, "simulated_chargers": 0})
        workers = [c for c in platform_children(settings) if c.name.endswith("worker")]
        assert {c.name for c in workers} == {
            "ingest worker",
            "status worker",
            "config worker",
            "charging worker",
        }
        for child in workers:
            assert "--no-shared" in child.argv, child
