"""What ASHA saves: the same seeded trials of one sweep spec run twice, with ASHA and in full
(no early stopping), and compared on epochs trained, wall time and the best validation accuracy.

python -m convlens.bench.asha [SPEC] [--root runs/bench_asha] [--samples N]

Both sweeps draw their trials from the spec's seed, so they train exactly the same configs;
each sweep's trials.csv, curves.png and best_job.yaml stay under --root.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from convlens.raycluster.env import prepare_environment
from convlens.specs.load import load_job
from convlens.storage.rundir import trial_epochs

SPEC = "sweeps/asha_bench.yaml"


def sweep_job(spec: str, overrides: dict):
    """The sweep spec with these fields set (validated)."""
    return load_job(spec, [f"{k}={v}" for k, v in overrides.items()], "sweep")


def run_sweep(spec: str, overrides: dict) -> dict:
    from convlens.sweep.tune_runner import sweep
    job = sweep_job(spec, overrides)
    shutil.rmtree(job.sweep_dir, ignore_errors=True)
    start = time.time()
    rows = sweep(job)
    wall = time.time() - start
    best = max((r["best_val_accuracy"] for r in rows if isinstance(r["best_val_accuracy"], float)), default=0.0)
    trained, planned = trial_epochs(rows)
    return {"trials": len(rows), "epochs": trained, "planned": planned, "wall_seconds": wall, "best_val_accuracy": best,
            "best_trial": next((r["trial_id"] for r in rows if r["best_val_accuracy"] == best), "")}


def compare(spec: str, root: Path, samples: int | None) -> dict[str, dict]:
    common = {"root": str(root), **({"num_samples": samples} if samples else {})}
    return {"asha": run_sweep(spec, {**common, "name": "asha"}),
            "full": run_sweep(spec, {**common, "name": "full", "scheduler.name": "none"})}


def format_table(figures: dict[str, dict]) -> str:
    asha, full = figures["asha"], figures["full"]
    lines = [f"{'':6} {'trials':>6} {'epochs':>7} {'wall s':>8} {'best val acc':>13}  best trial"]
    for name, f in figures.items():
        lines.append(f"{name:6} {f['trials']:6d} {f['epochs']:7d} {f['wall_seconds']:8.0f} "
                     f"{f['best_val_accuracy']:13.4f}  {f['best_trial']}")
    lines.append(f"ASHA trained {asha['epochs'] / full['epochs']:.0%} of the epochs in "
                 f"{asha['wall_seconds'] / full['wall_seconds']:.0%} of the wall time; best accuracy "
                 f"{100 * (asha['best_val_accuracy'] - full['best_val_accuracy']):+.2f} points")
    return "\n".join(lines)


def main(argv=None) -> dict[str, dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("spec", nargs="?", default=SPEC)
    p.add_argument("--root", default="runs/bench_asha")
    p.add_argument("--samples", type=int, default=None, help="trials (default: the spec's num_samples)")
    args = p.parse_args(argv)
    prepare_environment()  # before anything imports ray, as the CLI does
    figures = compare(args.spec, Path(args.root), args.samples)
    print(format_table(figures), flush=True)
    return figures


if __name__ == "__main__":
    main()
