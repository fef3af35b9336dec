"""The folders convlens writes, and every file name in them: one place for each fact.

A run directory (`<run.root>/<run.name>`, also Ray Train's storage for the run), a sweep
directory (`<root>/<name>`, its trials' run directories under trials/), and an analysis
directory. Training, sweeps, analysis, probes and the report all go through these classes.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

from convlens.storage.files import read_json, read_jsonl, write_atomic, write_json


class RunDir:
    CONFIG = "config.yaml"  # the resolved train spec
    METRICS = "metrics.jsonl"  # one line per epoch, rewritten from the checkpointed history
    SUMMARY = "summary.json"  # written once the run is tested: the run is finished
    STOPPED = "stopped.json"  # why a run ended early (NaN loss, bad checkpoint)
    ATTEMPTS = "attempts.jsonl"  # one line per start of the run
    STARTED = "started.txt"  # when the run's first start began (epoch seconds): its W&B runtime counts from there
    PER_CLASS = "per_class.csv"
    CURVES = ("loss.png", "accuracy.png")
    PROBES = "probes.json"
    WANDB_ID = "wandb_id.txt"
    WANDB = "wandb"  # W&B's own folder when tracking.dir is unset
    FAULTS = ".faults"  # markers of injected test faults
    RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of registered checkpoints
    CHECKPOINT = "checkpoint_epoch"  # checkpoint_epochNNNN_<id>/, kept by Ray Train
    BEST = "best_epoch"  # best_epochNNNN_<id>/, the best by validation error
    DONOR = "donor_epoch"  # donor_epochNNNN_<id>/: a PBT trial's copy of the checkpoint it started from
    PERTURBATIONS = "perturbations.jsonl"  # a PBT trial's starts from other trials' checkpoints

    def __init__(self, path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # ---- per-epoch records
    def read_metrics(self) -> list[dict]:
        return read_jsonl(self.path / self.METRICS)

    def write_metrics(self, history: list[dict]) -> None:
        write_atomic(self.path / self.METRICS, "".join(json.dumps(h) + "\n" for h in history).encode())

    def read_attempts(self) -> list[dict]:
        return read_jsonl(self.path / self.ATTEMPTS)

    def record_attempt(self, entry: dict) -> dict:
        """Append one start of the run; returns the entry with its attempt number and time."""
        done = self.read_attempts()
        entry = {"attempt": len(done) + 1, **entry, "time": time.time()}
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path / self.ATTEMPTS, "".join(json.dumps(a) + "\n" for a in [*done, entry]).encode())
        return entry

    def mark_started(self, when: float) -> None:
        """Record the first start only: a retry, rerun or requeue keeps it."""
        if not (self.path / self.STARTED).is_file():
            write_started(self.path / self.STARTED, when)

    def started(self) -> float | None:
        return read_started(self.path / self.STARTED)

    # ---- end states
    def read_summary(self) -> dict | None:
        return read_json(self.path / self.SUMMARY)

    def write_summary(self, summary: dict) -> None:
        write_json(self.path / self.SUMMARY, summary)

    def finished(self) -> bool:
        return (self.path / self.SUMMARY).is_file()

    def read_stopped(self) -> dict | None:
        return read_json(self.path / self.STOPPED)

    def write_stopped(self, reason: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.path / self.STOPPED, reason)

    def clear_stopped(self) -> None:
        (self.path / self.STOPPED).unlink(missing_ok=True)

    # ---- checkpoint folders (unverified; checkpoint.py verifies)
    @staticmethod
    def epoch_of(folder: Path) -> int:
        """The epoch in a checkpoint folder's name (checkpoint_epochNNNN_<id>, best_epochNNNN_<id>)."""
        m = re.search(r"epoch(\d+)", Path(folder).name)
        return int(m.group(1)) if m else -1

    @classmethod
    def folder_name(cls, prefix: str, epoch: int) -> str:
        """Unique per save: a redone epoch never reuses a folder Ray Train or a reader tracks."""
        return f"{prefix}{epoch:04d}_{uuid.uuid4().hex[:6]}"

    def checkpoints(self) -> list[Path]:
        """checkpoint_epoch* folders, oldest first."""
        return self._sorted(self.CHECKPOINT)

    def bests(self) -> list[Path]:
        """best_epoch* folders, oldest first."""
        return self._sorted(self.BEST)

    def _sorted(self, prefix: str) -> list[Path]:
        found = [p for p in self.path.glob(f"{prefix}*") if p.is_dir()]
        return sorted(found, key=lambda p: (self.epoch_of(p), p.stat().st_mtime))

    def registered(self) -> list[Path]:
        """The checkpoint folders Ray Train has registered, oldest first: what a restarted
        attempt can resume from (read from Ray's snapshot file)."""
        try:
            snapshot = json.loads((self.path / self.RAY_SNAPSHOT).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return []
        folders = [self.path / r["checkpoint_dir_name"] for r in snapshot.get("checkpoint_results", [])]
        return sorted(folders, key=self.epoch_of)


class SweepDir:
    TRIALS = "trials.csv"
    BEST_JOB = "best_job.yaml"
    CURVES = "curves.png"
    LEARNING_RATES = "learning_rates.png"  # PBT: each trial's learning rate per epoch
    ARRAY_INDEX = "array.json"  # submit --array: the trials it drew
    TUNER = "tuner.pkl"  # Ray Tune's state: the sweep exists and can be resumed
    TRIAL_RUNS = "trials"  # one run directory per trial
    STARTED = RunDir.STARTED  # when the sweep's first start began: its W&B runtime counts from there

    def __init__(self, path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def trials_dir(self) -> Path:
        return self.path / self.TRIAL_RUNS

    def mark_started(self, when: float, resumed: bool) -> None:
        """Record when a new sweep starts; a resumed one keeps its first start."""
        if not resumed or not (self.path / self.STARTED).is_file():
            write_started(self.path / self.STARTED, when)

    def started(self) -> float | None:
        return read_started(self.path / self.STARTED)

    def trial_run(self, sweep: str, trial_id: str) -> RunDir:
        return RunDir(self.trials_dir / trial_run_name(sweep, trial_id))


def write_started(path: Path, when: float) -> None:
    write_atomic(path, f"{when:.3f}\n".encode())


def read_started(path: Path) -> float | None:
    return float(path.read_text()) if path.is_file() else None


def trial_run_name(sweep: str, trial_id: str) -> str:
    return f"{sweep}_trial_{trial_id}"


def trial_epochs(rows) -> tuple[int, int]:
    """Rows of trials.csv (dicts): the epochs the trials trained, and those they would have trained
    without early stopping (planned_epochs: each trial's run.epochs, itself maybe searched)."""
    rows = list(rows)
    return sum(int(r["epochs"]) for r in rows), sum(int(r["planned_epochs"]) for r in rows)


def early_stopping_saved(trained: int, planned: int) -> str:
    """'; early stopping saved N (P%)', or nothing when every planned epoch was trained."""
    return f"; early stopping saved {planned - trained} ({1 - trained / planned:.0%})" if planned > trained else ""


class DemoDir:
    """`convlens demo`'s root: the networks' run directories, the sweep, analysis/, report.html."""
    TIMINGS = "timings.json"  # {"seconds": wall time, "steps": {step: seconds}, "machine": {"cpus", "memory_gib"}}


class AnalysisDir:
    """`convlens analyze`'s output: <run>/<checkpoint folder>/<method>[_<suffix>].png and
    <method>.json per checkpoint, compare/ pages, and index.json, the report's only source:

    {"name": job name, "runs": [run names], "checkpoints": [folders], "seconds": wall time,
     "methods": {method: {"title", "explanation", "caption"[, "note"]}} in the order they ran,
     "files": [{"file": path relative to this folder, "method", "run", "epoch", "checkpoint",
                "caption"}]}
    """
    INDEX = "index.json"
    COMPARE = "compare"  # pages composed across runs and epochs

    def __init__(self, path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def checkpoint_dir(self, run: str, checkpoint: Path) -> Path:
        """Where the method files of one analysed checkpoint go."""
        return self.path / run / Path(checkpoint).name

    def read_index(self) -> dict:
        return read_json(self.path / self.INDEX, {})

    def write_index(self, index: dict) -> None:
        write_json(self.path / self.INDEX, index)
