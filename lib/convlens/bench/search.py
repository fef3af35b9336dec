"""Search algorithms compared: random search + ASHA, TPE + ASHA and PBT on one sweep spec, each
over several seeds, by the best validation accuracy found, its trial's test accuracy, the
epochs trained and the wall time.

python -m convlens.bench.search [SPEC] [--root runs/bench_search] [--seeds 0 1 2] [--samples N]
    [--methods random+asha tpe+asha pbt]

Each (method, seed) is a sweep named <method>_s<seed> under --root, its trials.csv kept.
"""
from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

from convlens.raycluster.env import prepare_environment
from convlens.storage.rundir import SweepDir

SPEC = "sweeps/search_bench.yaml"
METHODS = {  # the sweep fields each method sets
    "random+asha": {"search": "random", "scheduler.name": "asha"},
    "tpe+asha": {"search": "tpe", "scheduler.name": "asha"},
    "pbt": {"search": "random", "scheduler.name": "pbt"},
}


def sweep_overrides(method: str, root: Path, seed: int, samples: int | None) -> dict:
    """The sweep fields of one (method, seed): the method's, and its name under root."""
    return {**METHODS[method], "root": str(root), "name": f"{method.replace('+', '_')}_s{seed}", "seed": seed,
            **({"num_samples": samples} if samples else {})}


def run_all(spec: str, root: Path, seeds: list[int], samples: int | None,
            methods: list[str] | None = None) -> dict[str, list[dict]]:
    """{method: one figures dict (bench.asha.run_sweep's, plus test_accuracy) per seed}. Every
    method's sweep spec is validated before the first sweep starts."""
    from convlens.bench.asha import run_sweep, sweep_job
    methods = methods or list(METHODS)
    for method in methods:
        sweep_job(spec, sweep_overrides(method, root, seeds[0], samples))
    out = {}
    for method in methods:
        out[method] = []
        for seed in seeds:
            overrides = sweep_overrides(method, root, seed, samples)
            figures = run_sweep(spec, overrides)
            job = sweep_job(spec, overrides)
            with open(job.sweep_dir / SweepDir.TRIALS) as f:
                best = next((r for r in csv.DictReader(f) if r["best"] == "True"), None)
            out[method].append({**figures, "seed": seed,
                                "test_accuracy": float(best["test_accuracy"]) if best else float("nan")})
    return out


def summarize(runs: list[dict]) -> dict:
    """Mean and spread over seeds (spread 0 for one seed)."""
    def stats(key):
        values = [r[key] for r in runs]
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
    return {key: stats(key) for key in ("best_val_accuracy", "test_accuracy", "epochs", "wall_seconds")}


def format_table(results: dict[str, list[dict]]) -> str:
    lines = [f"{'':12} {'seeds':>5} {'best val acc':>15} {'its test acc':>15} {'epochs':>11} {'wall s':>11}"]
    for method, runs in results.items():
        s = summarize(runs)
        cells = [f"{s[k][0]:.4f}±{s[k][1]:.4f}" for k in ("best_val_accuracy", "test_accuracy")]
        cells += [f"{s[k][0]:.0f}±{s[k][1]:.0f}" for k in ("epochs", "wall_seconds")]
        lines.append(f"{method:12} {len(runs):5d} {cells[0]:>15} {cells[1]:>15} {cells[2]:>11} {cells[3]:>11}")
    return "\n".join(lines)


def main(argv=None) -> dict[str, list[dict]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("spec", nargs="?", default=SPEC)
    p.add_argument("--root", default="runs/bench_search")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--samples", type=int, default=None, help="trials per sweep (default: the spec's num_samples)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    args = p.parse_args(argv)
    prepare_environment()  # before anything imports ray, as the CLI does
    results = run_all(args.spec, Path(args.root), args.seeds, args.samples, args.methods)
    print(format_table(results), flush=True)
    return results


if __name__ == "__main__":
    main()
