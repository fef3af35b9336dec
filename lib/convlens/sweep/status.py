"""What a sweep shows while it runs, in place of Ray Tune's boxed tables (those come back with
`convlens --verbose`): a Tune callback in the driver, which sees every result and every trial end.

On a terminal one status line, redrawn (tqdm): epochs trained of planned, trials running /
finished / stopped, the best validation accuracy so far and its trial. In a log (files, Slurm)
the same as a line about every 30 s. Either way one line per trial end: its id, drawn values,
best validation accuracy, and how it ended (finished, stopped by ASHA after epoch N, stopped by
the run itself, failed with its error).
"""
from __future__ import annotations

import re
import sys
import time
from collections import Counter
from dataclasses import dataclass

import ray.tune

from convlens.storage.rundir import trial_epochs
from convlens.sweep.results import fmt
from convlens.sweep.space import trial_id
from convlens.sweep.trial import trial_index

STATUS_EVERY_S = 30.0  # a log's status line, as often as Tune's own heartbeat
REDRAW_EVERY_S = 1.0  # the terminal's line, for its elapsed time between results
COUNTED = ("running", "pending", "finished", "stopped", "failed")  # trial states, in this order


@dataclass
class TrialView:
    """One trial as the driver has seen it: epochs reported to Tune and its best validation accuracy."""
    planned: int  # its run.epochs
    epochs: int = 0
    best: float | None = None

    def add(self, result: dict) -> None:
        if "stop_reason" in result:  # a stopped run reports its planned epochs, not trained ones
            return
        self.epochs = max(self.epochs, int(result.get("epoch", 0)))
        acc = result.get("best_val_accuracy", result.get("val_accuracy"))
        if acc is not None and (self.best is None or acc > self.best):
            self.best = float(acc)


def ending(result: dict, scheduler: str) -> tuple[str, str]:
    """(state, words) of a trial Tune ended without an error, from its last result: "finished"
    after its final report (trial.run_trial's, with the test accuracy), "stopped" when its run
    stopped itself (NaN loss, bad checkpoint) or the scheduler stopped it after an epoch report."""
    if "stop_reason" in result:
        return "stopped", f"stopped: {result['stop_reason']}"
    if "test_accuracy" in result:
        return "finished", "finished"
    by = "ASHA" if scheduler == "asha" else "Tune"
    return "stopped", f"stopped by {by} after epoch {result.get('epoch', '?')}"


def trial_state(status: str, result: dict) -> str:
    """One of COUNTED, from a Tune trial's status and last result."""
    if status == "TERMINATED":
        return ending(result, "")[0]
    return {"RUNNING": "running", "ERROR": "failed"}.get(status, "pending")  # PENDING, PAUSED


def error_line(text: str, width: int = 200) -> str:
    """The line that names an error in a traceback or Tune's error file: the last 'SomeError: ...'
    line (a RayTaskError's text ends with the cause's), else the last non-empty line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"[\w.]+(Error|Exception|Interrupt)\b.*:", line)]
    line = (named or lines or ["(no message)"])[-1]
    return line if len(line) <= width else line[:width - 3] + "..."


def read_error(path: str | None) -> str:
    """Tune's error.txt of a trial (written by the driver before on_trial_error), or nothing."""
    from pathlib import Path
    try:
        return Path(path).read_text() if path else ""
    except OSError:
        return ""


def drawn_text(drawn: dict) -> str:
    return ", ".join(f"{key}={fmt(value)}" for key, value in drawn.items())


def trial_line(tid: str, drawn: dict, best: float | None, how: str) -> str:
    """'trial 00002 (optim.lr=0.05, ...): best val acc 0.8412, stopped by ASHA after epoch 2'."""
    acc = f"best val acc {best:.4f}" if best is not None else "no validation"
    return f"trial {tid} ({drawn_text(drawn)}): {acc}, {how}"


def status_text(counts: Counter, best: tuple[float, str] | None) -> str:
    """'2 running, 1 finished, 1 stopped; best val acc 0.8412 (trial 00002)': running, finished
    and stopped always, pending and failed when there are any."""
    parts = [f"{counts[s]} {s}" for s in COUNTED if counts[s] or s in ("running", "finished", "stopped")]
    acc = f"best val acc {best[0]:.4f} (trial {best[1]})" if best else "no validation yet"
    return f"{', '.join(parts)}; {acc}"


def log_line(name: str, elapsed_s: float, trained: int, planned: int, text: str) -> str:
    from tqdm import tqdm
    return f"sweep {name} [{tqdm.format_interval(elapsed_s)}]: {trained} of {planned} epochs, {text}"


def sweep_trial_id(trial) -> str:
    """A Tune trial's id in the sweep (its run name's)."""
    return trial_id(trial_index(trial.trial_id, trial.config))


class SweepStatus(ray.tune.Callback):
    """The sweep's live status (see the module's docstring). planned: each trial index's run.epochs;
    space: the searched keys, in the spec's order. Tune pickles callbacks with the Tuner, so the
    display is chosen and opened in setup(), by the process that runs the sweep."""

    def __init__(self, name: str, space: list[str], planned: list[int], scheduler: str):
        self.name, self.space, self.planned, self.scheduler = name, space, planned, scheduler
        self.views: dict[str, TrialView] = {}
        self.ended: dict[str, str] = {}  # trial id -> its COUNTED state, before Tune sets its status
        self.bar, self.start, self.shown = None, time.time(), float("-inf")

    def setup(self, **info):
        from convlens.base.progress import progress_mode
        from convlens.raycluster.env import verbose
        self.start, self.shown = time.time(), float("-inf")
        if progress_mode(quiet=False) == "bar" and not verbose():  # Tune's own lines would break it
            from tqdm import tqdm
            self.bar = tqdm(total=sum(self.planned), desc=f"sweep {self.name}", dynamic_ncols=True,
                            bar_format="{desc}: {n}/{total} epochs |{bar:12}| {elapsed}{postfix}")

    def view(self, trial) -> TrialView:
        """The trial's view; a trial first seen here (a resumed sweep's) starts from its last result."""
        index = trial_index(trial.trial_id, trial.config)
        tid = trial_id(index)
        if tid not in self.views:
            planned = self.planned[index] if index < len(self.planned) else self.planned[-1]
            self.views[tid] = TrialView(int(trial.config.get("run.epochs", planned)))  # TPE draws as it goes
            self.views[tid].add(trial.last_result or {})
        return self.views[tid]

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.view(trial).add(result)
        self.show(trials, force=self.bar is not None)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.end(trial, *ending(trial.last_result or {}, self.scheduler))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.end(trial, "failed", f"failed: {error_line(read_error(trial.error_file))}")

    def on_step_end(self, iteration, trials, **info):
        self.show(trials)

    def on_experiment_end(self, trials, **info):
        if self.bar is not None:
            self.show(trials, force=True)
            self.bar.close()

    def end(self, trial, state: str, how: str) -> None:
        tid, drawn = sweep_trial_id(trial), {key: trial.config.get(key) for key in self.space}
        self.ended[tid] = state
        self.write("[convlens] " + trial_line(tid, drawn, self.view(trial).best, how))

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)  # above the status line, which is redrawn below
        else:
            print(line, flush=True)

    def show(self, trials, force: bool = False) -> None:
        """Redraw the terminal's line (at most once a second unless forced), or print the log's
        line every STATUS_EVERY_S."""
        now = time.time()
        if now - self.shown < (REDRAW_EVERY_S if self.bar is not None else STATUS_EVERY_S) and not force:
            return
        self.shown = now
        views = [self.view(t) for t in trials]
        trained = trial_epochs({"epochs": v.epochs, "planned_epochs": v.planned} for v in views)[0]
        counts = Counter(self.ended.get(sweep_trial_id(t)) or trial_state(t.status, t.last_result or {})
                         for t in trials)
        # Tune creates trials as slots free up: the ones it has not created yet are pending too
        counts["pending"] = len(self.planned) - sum(counts[s] for s in COUNTED if s != "pending")
        scored = [(v.best, tid) for tid, v in self.views.items() if v.best is not None]
        text = status_text(counts, max(scored, key=lambda s: s[0]) if scored else None)
        if self.bar is not None:
            self.bar.n = trained
            self.bar.set_postfix_str(text, refresh=True)
        else:
            print("[convlens] " + log_line(self.name, now - self.start, trained, sum(self.planned), text), flush=True)
