"""Test-only fault injection: nothing happens unless CONVLENS_FAULTS is set.

CONVLENS_FAULTS holds a JSON list of faults, each saying what, where and how often:

    {"kind": "nan" | "kill" | "hold", "at": "rank:epoch:step", "run": "<run name glob>",
     "times": 1, "seconds": 60}         # kill: SIGKILL that worker; hold: it sleeps `seconds`
    {"kind": "kill_method", "method": "gradcam"}   # SIGKILL the analysis task after its first PNG

The training loop calls `at_step` once per step and the analysis runner `after_file` once per
file; with no faults set each is one dictionary lookup. Markers in <run>/.faults count how often
a kill or hold has fired, so a retried attempt does not fire it again once `times` is reached.
"""
from __future__ import annotations

import fnmatch
import json
import os
import signal
import time
from functools import lru_cache
from pathlib import Path

from convlens.storage.rundir import RunDir

ENV = "CONVLENS_FAULTS"


def planned() -> list[dict]:
    return _parse(os.environ.get(ENV, ""))


@lru_cache(maxsize=8)
def _parse(text: str) -> list[dict]:
    return json.loads(text) if text else []


def at_step(run: RunDir, rank: int, epoch: int, step: int, loss):
    """Fire the faults due at this rank, epoch and step (1-based epoch); returns the loss."""
    for fault in planned():
        if fault.get("kind") not in ("nan", "kill", "hold") or not fnmatch.fnmatch(run.name, fault.get("run", "*")):
            continue
        if tuple(int(v) for v in fault["at"].split(":")) != (rank, epoch, step):
            continue
        if fault["kind"] == "nan":
            loss = loss * float("nan")
        elif fire(run, fault["kind"], fault.get("times", 1), epoch):
            if fault["kind"] == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(fault.get("seconds", 60.0))
    return loss


def fire(run: RunDir, name: str, times: int, epoch: int) -> bool:
    """Whether a kill or hold fires now; each waits until the previous epoch is registered, so
    it hits the same point on every machine."""
    markers = run / RunDir.FAULTS
    markers.mkdir(parents=True, exist_ok=True)
    fired = len(list(markers.glob(f"{name}-*")))
    if fired >= times:
        return False
    wait_registered(run, epoch - 1)
    (markers / f"{name}-{fired}").touch()
    return True


def wait_registered(run: RunDir, epoch: int, timeout: float = 60.0) -> None:
    """Until Ray Train has registered epoch's checkpoint. Its controller collects reports when it
    polls the workers, and a worker dying before that poll takes the last report with it."""
    deadline = time.monotonic() + timeout
    while epoch > 0 and time.monotonic() < deadline:
        if any(RunDir.epoch_of(p) >= epoch for p in run.registered()):
            return
        time.sleep(0.1)


def after_file(out_dir: Path, method: str) -> None:
    """SIGKILL this analysis task the first time `method` has written a file (a marker remembers)."""
    for fault in planned():
        if fault.get("kind") == "kill_method" and fault.get("method") == method:
            marker = Path(out_dir) / f".killed-{method}"
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
