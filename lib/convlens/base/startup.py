"""What every convlens process does first, before it imports torch and Ray: fewer collections.

Importing torch and Ray leaves about a million objects that live as long as the process. At
Python's default thresholds (700, 10, 10) the cyclic garbage collector walks them again and again
while they load and while a run trains: about 0.5 s of CPU for each process that imports them (a
Train worker, a Tune trial, a CLI command), and a sixth of a small sweep's CPU. A larger first
threshold keeps at most a few megabytes of cyclic garbage a little longer.
"""
from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 20)
# Ray runs this in each of its worker processes as it starts (runtime_env's worker_process_setup_hook)
RAY_SETUP_HOOK = f"{__name__}.collect_less"


def collect_less() -> None:
    gc.set_threshold(*THRESHOLDS)
