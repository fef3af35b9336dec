"""How training cost scales: 2 Ray workers vs 1, dataset size, model width. Prints a table.

python -m convlens.bench.scaling [SPEC] [--epochs 2] [--root runs/bench_scaling]

Each row is a real `convlens train` of SPEC (default jobs/fmnist_resnet.yaml) with a few
overrides; images/second is the last epoch's (the first pays for process and graph start-up).
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from convlens.raycluster.env import prepare_environment
from convlens.specs.load import load_job
from convlens.storage.rundir import RunDir

# (label, overrides): the first row is the reference the others are divided by
ROWS = [
    ("1 worker, width 16, 10k images", {"run.workers": 1}),
    ("1 worker x 2 CPUs, width 16, 10k images", {"run.workers": 1, "run.cpus_per_worker": 2}),
    ("2 workers, width 16, 10k images", {"run.workers": 2}),
    ("1 worker, width 8, 10k images", {"run.workers": 1, "model.width": 8}),
    ("1 worker, width 32, 10k images", {"run.workers": 1, "model.width": 32}),
    ("1 worker, width 16, 5k images", {"run.workers": 1, "data.train_subset": 5000}),
    ("1 worker, width 16, 20k images", {"run.workers": 1, "data.train_subset": 20000}),
]


def measure(spec: str, overrides: dict, epochs: int, root: Path, name: str) -> dict:
    from convlens.training.run import train
    base = {"data.train_subset": 10000, "data.test_subset": 1000, "run.epochs": epochs,
            "schedule.name": "constant", "run.quiet": True, "run.root": str(root), "run.name": name}
    job = load_job(spec, [f"{k}={v}" for k, v in {**base, **overrides}.items()], "train")
    shutil.rmtree(job.run_dir, ignore_errors=True)
    start = time.time()
    train(job)
    last = RunDir(job.run_dir).read_metrics()[-1]
    return {"images_per_second": last["images_per_second"], "epoch_seconds": last["epoch_seconds"],
            "wall_seconds": time.time() - start}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spec", nargs="?", default="jobs/fmnist_resnet.yaml")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--root", default="runs/bench_scaling")
    args = p.parse_args(argv)
    prepare_environment()  # before anything imports ray, as the CLI does
    root = Path(args.root).resolve()
    results = []
    for i, (label, overrides) in enumerate(ROWS):
        results.append((label, measure(args.spec, overrides, args.epochs, root, f"row{i}")))
        print(f"[scaling] {label}: {results[-1][1]['images_per_second']:.0f} images/s", flush=True)
    ref = results[0][1]
    print("\n| run | images/s | epoch s | vs first row |\n|---|---|---|---|")
    for label, r in results:
        print(f"| {label} | {r['images_per_second']:.0f} | {r['epoch_seconds']:.1f} | "
              f"{r['images_per_second'] / ref['images_per_second']:.2f}x |")


if __name__ == "__main__":
    main()
