"""The process supervisor of ``ampfleet up``: start the platform's processes, restart one that
dies, stop them all in order.

* Each child runs in its own session, so the terminal's Ctrl-C reaches the supervisor only,
  which then stops the children in the order the platform needs (``Child.stage``): the
  devices' side first, the broker before the workers (it hands what it queued to them), and
  it waits for each stage. A second Ctrl-C kills what is left.
* A child that exits while the platform runs is restarted after a back-off (``restart_delay``:
  1 s doubling to 30 s, back to 1 s once it has run a minute), and the supervisor says so;
  the other children keep running. A child's leftovers (gunicorn's workers) go with it: its
  process group is killed.
* If the supervisor itself is killed, the kernel sends every child SIGTERM (Linux's
  ``PR_SET_PDEATHSIG``): no orphan keeps the ports of the next start.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import click

FIRST_DELAY = 1.0
MOST_DELAY = 30.0
STEADY = 60.0  # seconds of running after which a child's back-off starts over
POLL = 0.2
_PR_SET_PDEATHSIG = 1


def restart_delay(failures: int) -> float:
    """Seconds before restarting a child that failed ``failures`` times in a row (1-based)."""
    return min(MOST_DELAY, FIRST_DELAY * 2.0 ** (failures - 1))


@dataclasses.dataclass
class Child:
    """One supervised process."""

    name: str  # for messages: "ingest worker"
    argv: list[str]
    stage: int  # stopped in increasing stage order; equal stages together
    stop_timeout: float = 15.0  # then SIGKILL
    # After the first start, wait for this before starting the next child; it is given
    # "keep waiting?" (the child runs and nobody asked to stop) and says whether it is ready.
    ready: Callable[[Callable[[], bool]], bool] | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None  # when a dead child is due to start again

    @property
    def pid(self) -> int | None:
        """The running process's id."""
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    """Runs ``children`` until SIGINT, SIGTERM or SIGHUP."""

    def __init__(self, children: list[Child], say: Callable[[str], None] | None = None) -> None:
        self.children = children
        self.stopping = False
        self._forced = False
        self._say = say or (lambda line: click.echo(f"ampfleet up: {line}", err=True))

    # -- signals -------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.stopping:
            self._forced = True  # the second Ctrl-C: do not wait any longer
        self.stopping = True

    def install_signal_handlers(self) -> None:
        """Stop on SIGINT (Ctrl-C), SIGTERM and SIGHUP (the terminal closed)."""
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    # -- running ---------------------------------------------------------------------------------
    def _start(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.argv, start_new_session=True, preexec_fn=_die_with_parent
        )
        child.started_at = time.monotonic()
        child.restart_at = None

    def run(self) -> None:
        """Start every child in order, supervise them, stop them all when told to."""
        try:
            for child in self.children:
                if self.stopping:
                    break
                self._start(child)
                if child.ready is not None and not child.ready(self._alive(child)):
                    if self.stopping:
                        break
                    raise click.ClickException(f"the {child.name} did not start")
            while not self.stopping:
                self._tend(time.monotonic())
                time.sleep(POLL)
        finally:
            self.stop()

    def _alive(self, child: Child) -> Callable[[], bool]:
        return lambda: child.running() and not self.stopping

    def _tend(self, now: float) -> None:
        """Notice children that died, and restart those whose back-off is over."""
        for child in self.children:
            if child.process is None:
                continue
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._say(f"restarting the {child.name}")
                    self._start(child)
                continue
            code = child.process.poll()
            if code is None:
                continue
            _kill_group(child.process.pid)  # what it left behind holds its port
            if now - child.started_at >= STEADY:
                child.failures = 0
            child.failures += 1
            delay = restart_delay(child.failures)
            child.restart_at = now + delay
            self._say(f"{child.name} exited with {code}; restarting in {delay:g} s")

    # -- stopping --------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the children stage by stage: SIGTERM, wait, SIGKILL after the stage's timeout."""
        self.stopping = True
        if not any(child.running() for child in self.children):
            return
        order = sorted(self.children, key=lambda child: child.stage)
        self._say("stopping " + ", ".join(child.name for child in order))
        for stage in sorted({child.stage for child in self.children}):
            group = [c for c in self.children if c.stage == stage and c.running()]
            for child in group:
                assert child.process is not None
                child.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + max((c.stop_timeout for c in group), default=0)
            while any(c.running() for c in group):
                if self._forced or time.monotonic() >= deadline:
                    for child in group:
                        if child.running():
                            self._say(f"the {child.name} did not stop: killed")
                    break
                time.sleep(0.05)
            for child in group:
                if child.process is not None:
                    _kill_group(child.process.pid)
                    child.process.wait()
        self._say("stopped")


def _kill_group(pgid: int) -> None:
    """SIGKILL what is left of a child's process group (its session's leader was the child)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
