"""How long work shows its progress: a bar when the user watches a terminal, a plain line every
~10% otherwise (log files, Slurm), nothing when quiet (`progress_mode`).

Two users, one counter of tenths (`Tenths`) for their lines:
    Progress       work the driver waits on (analysis tasks): a tqdm bar, or "label: n/total done"
    EpochProgress  what rank 0 shows of an epoch while it runs: a bar drawn by the Ray driver
                   (ray.experimental.tqdm_ray), or "label: p% (n/steps steps), loss, img/s"

An epoch's running loss is read from the device only when something is shown (at most about once
a second, or ten times an epoch), so the GPU never waits for the progress display.
"""
from __future__ import annotations

import sys
import time


def progress_mode(quiet: bool) -> str:
    if quiet:
        return "off"
    return "bar" if sys.stdout.isatty() else "lines"


class Tenths:
    """Says when a count of `total` items has passed another tenth of it: a line every ~10%."""

    def __init__(self, total: int):
        self.total, self.shown = total, 0

    def passed(self, done: int) -> bool:
        tenths = done * 10 // max(self.total, 1)
        if tenths > self.shown:
            self.shown = tenths
            return True
        return False


class Progress:
    """Counts finished items of `total`: `update(n)` as they finish, `close()` at the end."""

    def __init__(self, label: str, total: int, mode: str, unit: str = "task"):
        self.label, self.total, self.mode, self.done = label, total, mode, 0
        self.tenths = Tenths(total)
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=label, unit=unit, dynamic_ncols=True)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.mode == "lines" and self.tenths.passed(self.done):
            print(f"[convlens] {self.label}: {self.done}/{self.total} done", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class EpochProgress:
    """One epoch on rank 0: `step(done, sums)` after each step, `close()` at the end."""

    def __init__(self, mode: str, label: str, steps: int, workers: int = 1, interval_s: float = 1.0):
        self.mode, self.label, self.steps, self.interval_s = mode, label, steps, interval_s
        self.workers = workers  # DDP ranks step in lockstep: the job's rate is this rank's times this
        self.start = self.last = time.perf_counter()
        self.tenths = Tenths(steps)
        self.bar = None
        if mode == "bar":
            from ray.experimental import tqdm_ray
            self.bar = tqdm_ray.tqdm(total=steps, desc=label, unit="step")

    def step(self, done: int, sums) -> None:
        """After `done` steps of the epoch; sums: a tensor (loss sum, correct, images) so far on this rank."""
        if self.mode == "bar":
            self.bar.update(1)
            now = time.perf_counter()
            if now - self.last >= self.interval_s or done == self.steps:
                self.last = now
                self.bar.set_description(f"{self.label} {self.figures(sums, now)}")
        elif self.mode == "lines" and self.tenths.passed(done):
            print(f"[convlens] {self.label}: {100 * done // self.steps:3d}% ({done}/{self.steps} steps), "
                  f"{self.figures(sums, time.perf_counter())}", flush=True)

    def figures(self, sums, now: float) -> str:
        loss, _, images = sums.tolist()
        return f"loss {loss / max(images, 1):.4f}, {self.workers * images / max(now - self.start, 1e-9):.0f} img/s"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
