"""What every convlens process does first, before it imports torch and Ray: fewer collections.

Importing torch and Ray leaves about a million objects that live as long as the process. At
Python's default thresholds (700, 10, 10) the cyclic garbage collector walks them again and again
while they load and while a run trains, and once more as the process exits: about 0.5 s of CPU
for each process that imports them (a Train worker or controller, a Tune trial, a CLI command)
and about 1 s at its exit. A larger first threshold keeps at most a few megabytes of cyclic
garbage a little longer; frozen at exit (atexit runs before Python's last collection), those
objects are not walked once more only to be dropped with the process.
"""
from __future__ import annotations

import atexit
import gc

THRESHOLDS = (50_000, 20, 20)
# Ray runs this in each of its worker processes as it starts (runtime_env's worker_process_setup_hook)
RAY_SETUP_HOOK = f"{__name__}.collect_less"


def collect_less() -> None:
    """Safe to call again: the freeze stays registered once."""
    gc.set_threshold(*THRESHOLDS)
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
