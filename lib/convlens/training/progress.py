"""What rank 0 shows of an epoch while it runs: a progress bar when the user watches a terminal
(drawn by the Ray driver through ray.experimental.tqdm_ray), a plain line every ~10% of the
steps otherwise (log files, Slurm), nothing in quiet runs.

The running loss is read from the device only when something is shown (at most about once a
second, or ten times an epoch), so the GPU never waits for the progress display.
"""
from __future__ import annotations

import time

import torch


class EpochProgress:
    def __init__(self, mode: str, label: str, steps: int, workers: int = 1, interval_s: float = 1.0):
        self.mode, self.label, self.steps, self.interval_s = mode, label, steps, interval_s
        self.workers = workers  # DDP ranks step in lockstep: the job's rate is this rank's times this
        self.start = self.last = time.perf_counter()
        self.shown_tenths = 0
        self.bar = None
        if mode == "bar":
            from ray.experimental import tqdm_ray
            self.bar = tqdm_ray.tqdm(total=steps, desc=label, unit="step")

    def step(self, done: int, sums: torch.Tensor) -> None:
        """After `done` steps of the epoch; sums: (loss sum, correct, images) so far on this rank."""
        if self.mode == "bar":
            self.bar.update(1)
            now = time.perf_counter()
            if now - self.last >= self.interval_s or done == self.steps:
                self.last = now
                self.bar.set_description(f"{self.label} {self.figures(sums, now)}")
        elif self.mode == "lines" and done * 10 // self.steps > self.shown_tenths:
            self.shown_tenths = done * 10 // self.steps
            print(f"[convlens] {self.label}: {100 * done // self.steps:3d}% ({done}/{self.steps} steps), "
                  f"{self.figures(sums, time.perf_counter())}", flush=True)

    def figures(self, sums: torch.Tensor, now: float) -> str:
        loss, _, images = sums.tolist()
        return f"loss {loss / max(images, 1):.4f}, {self.workers * images / max(now - self.start, 1e-9):.0f} img/s"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
