"""How long work shows its progress in the driver: a tqdm bar when the user watches a terminal,
a plain line every ~10% otherwise (log files, Slurm), nothing when quiet. Training epochs show
theirs from rank 0 (training/progress.py); this is for work the driver waits on (analysis tasks).
"""
from __future__ import annotations

import sys

def progress_mode(quiet: bool) -> str:
    if quiet:
        return "off"
    return "bar" if sys.stdout.isatty() else "lines"


class Progress:
    """Counts finished items of `total`: `update(n)` as they finish, `close()` at the end."""

    def __init__(self, label: str, total: int, mode: str, unit: str = "task"):
        self.label, self.total, self.mode, self.done, self.shown_tenths = label, total, mode, 0, 0
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=label, unit=unit, dynamic_ncols=True)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.mode == "lines" and self.done * 10 // max(self.total, 1) > self.shown_tenths:
            self.shown_tenths = self.done * 10 // max(self.total, 1)
            print(f"[convlens] {self.label}: {self.done}/{self.total} done", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
