"""A sweep's outputs, the same for a Tune sweep and an array sweep: one row per trial read from
its run directory (with the nodes its workers ran on), ranked; trials.csv, the printed table, best_job.yaml (a ready train spec) and
curves.png, all in the sweep directory.
"""
from __future__ import annotations

import copy
import csv
import math
from pathlib import Path

import yaml

from convlens.specs.base import apply_overrides, validate
from convlens.specs.sweep import SweepJob
from convlens.specs.train import TrainJob
from convlens.storage.rundir import RunDir, SweepDir, early_stopping_saved, trial_epochs


def run_row(job: SweepJob, tid: str, sampled: dict, error) -> dict:
    """One trial's row, read from its run directory (metrics.jsonl, summary.json, stopped.json)."""
    run = SweepDir(job.sweep_dir).trial_run(job.name, tid)
    row = trial_row(tid, run.path, sampled, run.read_metrics(), run.read_summary(), run.read_stopped(), error)
    return {**row, "node": worker_nodes(run.read_attempts())}


def worker_nodes(attempts: list[dict]) -> str:
    """The node addresses of the trial's Train workers in its last attempt, space-separated."""
    nodes = attempts[-1].get("nodes", []) if attempts else []
    return " ".join(dict.fromkeys(n["address"] for n in nodes))


def trial_row(tid, run_dir, sampled, history, summary, stopped, error) -> dict:
    best = min(history, key=lambda h: h["val_error"]) if history else None
    if stopped:
        status = "stopped"
    elif error is not None:
        status = "error"
    elif summary:
        status = "completed"
    else:
        status = "early_stopped" if history else "not_run"
    reason = (stopped or {}).get("stop_reason") or (f"{type(error).__name__}: {error}"[:200] if error else "")
    return {"trial_id": tid, "run": run_dir.name, **{f"config/{k}": v for k, v in sampled.items()},
            "status": status, "stop_reason": reason, "epochs": history[-1]["epoch"] if history else 0,
            "best_epoch": best["epoch"] if best else "", "best_val_accuracy": best["val_accuracy"] if best else "",
            "test_accuracy": (summary or {}).get("test_accuracy", ""), "wandb_run_id": wandb_id(run_dir),
            "run_dir": str(run_dir)}


def wandb_id(run_dir: Path) -> str:
    path = Path(run_dir) / RunDir.WANDB_ID
    return path.read_text().strip() if path.is_file() else ""


def rank_rows(rows: list[dict]) -> list[dict]:
    """Best first: completed trials by best validation accuracy, then the rest."""
    def key(row):
        acc = row["best_val_accuracy"]
        scored = row["status"] == "completed" and isinstance(acc, float) and math.isfinite(acc)
        return (not scored, -(acc if scored else 0.0), row["trial_id"])
    rows = sorted(rows, key=key)
    for i, row in enumerate(rows):
        row["best"] = i == 0 and row["status"] == "completed"
    return rows


def write_outputs(job: SweepJob, spec: dict, rows: list[dict], tracked=None, scheduler: str | None = None) -> None:
    """tracked: the sweep's open W&B run (tracking.jobs.open_sweep_run), or None; scheduler: what
    scheduled the trials, job.scheduler.name unless given (an array sweep's: none)."""
    from convlens.sweep.pbt import current_values, perturbations_text, read_perturbations
    scheduler = scheduler or job.scheduler.name
    for row in rows:  # so trials.csv alone tells what early stopping saved, and how trials were found
        taken = read_perturbations(Path(row["run_dir"])) if scheduler == "pbt" else []
        # a PBT trial's values are those of its last perturbation (Tune's saved state may predate it)
        row.update({f"config/{k}": v for k, v in current_values(taken).items()})
        row["planned_epochs"] = planned_epochs({k: row[f"config/{k}"] for k in job.space}, spec)
        row["searcher"], row["scheduler"] = job.search, scheduler
        if scheduler == "pbt":
            row["perturbations"] = perturbations_text(taken)
    write_csv(job.sweep_dir / SweepDir.TRIALS, rows)
    print(format_table(rows, list(job.space)), flush=True)
    print(f"[convlens] {epochs_line(rows)}", flush=True)
    best = rows[0] if rows and rows[0]["best"] else None
    log_sweep_run(job, rows, best, tracked)
    if best is not None:
        path = write_best_job(job, spec, best)
        print(f"[convlens] best trial {best['trial_id']}: val acc {best['best_val_accuracy']:.4f}, "
              f"test acc {best['test_accuracy']:.4f}; train it with: convlens train {path}", flush=True)
    else:
        print("[convlens] no trial completed; no best_job.yaml written", flush=True)
    curves = {row["trial_id"]: read_curve(Path(row["run_dir"])) for row in rows}
    plot_curves(curves, best["trial_id"] if best else None, job.sweep_dir / SweepDir.CURVES, job.name)
    if scheduler == "pbt":  # the schedules PBT found: each trial's model's learning rate per epoch
        rates = {row["trial_id"]: read_curve(Path(row["run_dir"]), "lr") for row in rows}
        plot_curves(rates, best["trial_id"] if best else None, job.sweep_dir / SweepDir.LEARNING_RATES,
                    job.name, "learning rate", log=True)
    print(f"[convlens] sweep outputs in {job.sweep_dir}", flush=True)


def planned_epochs(drawn: dict, spec: dict) -> int:
    """A trial's run.epochs: its drawn value where the sweep searches it, else the base spec's."""
    return int(drawn.get("run.epochs", spec["run"]["epochs"]))


def epochs_line(rows: list[dict]) -> str:
    trained, planned = trial_epochs(rows)
    return f"{len(rows)} trials trained {trained} of {planned} epochs{early_stopping_saved(trained, planned)}"


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(rows[0]) if rows else ["trial_id"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (yaml.safe_dump(v, default_flow_style=True).strip()
                                 if isinstance(v, (list, dict)) else v) for k, v in row.items()})


def log_sweep_run(job: SweepJob, rows: list[dict], best: dict | None, tracked) -> None:
    """Into the sweep's own W&B run (job_type sweep, in the trials' group): the trials table and
    the best configuration."""
    from convlens.tracking.jobs import log_sweep
    best_config = {k: best[f"config/{k}"] for k in job.space} if best else None
    log_sweep(tracked, rows, best_config)


def format_table(rows: list[dict], space_keys: list[str]) -> str:
    head = ["trial", *space_keys, "status", "epochs", "best_ep", "val_acc", "test_acc"]
    body = []
    for row in rows:
        cells = [row["trial_id"] + (" *" if row["best"] else "")]
        cells += [fmt(row[f"config/{k}"]) for k in space_keys]
        cells += [row["status"], str(row["epochs"]), str(row["best_epoch"]),
                  fmt(row["best_val_accuracy"]), fmt(row["test_accuracy"])]
        body.append(cells)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [head, *body])


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value) if value is not None else ""


def write_best_job(job: SweepJob, spec: dict, best: dict) -> Path:
    """The best config as a ready train spec, named <sweep>_best, in the sweep's root."""
    sampled = {k: best[f"config/{k}"] for k in job.space}
    spec = apply_overrides(copy.deepcopy(spec), sampled)
    spec = apply_overrides(spec, {"run.name": f"{job.name}_best", "run.root": str(job.sweep_dir.parent)})
    validate(TrainJob, spec, "best_job.yaml")
    path = job.sweep_dir / SweepDir.BEST_JOB
    header = (f"# Best trial {best['trial_id']} of sweep {job.name}: val acc {best['best_val_accuracy']:.4f}, "
              f"test acc {best['test_accuracy']:.4f}\n")
    path.write_text(header + yaml.safe_dump(spec, sort_keys=False))
    return path


def read_curve(run_dir: Path, metric: str = "val_accuracy") -> tuple[list[int], list[float]]:
    history = [h for h in RunDir(run_dir).read_metrics() if metric in h]
    return [h["epoch"] for h in history], [h[metric] for h in history]


def plot_curves(curves: dict[str, tuple[list, list]], best: str | None, path: Path, title: str,
                ylabel: str = "validation accuracy", log: bool = False) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for tid, (epochs, acc) in curves.items():
        if epochs:
            ax.plot(epochs, acc, marker="o", lw=2.5 if tid == best else 1.0,
                    alpha=1.0 if tid == best else 0.6, label=tid + (" (best)" if tid == best else ""))
    ax.set(xlabel="epoch", ylabel=ylabel, title=f"sweep {title}: {ylabel}", yscale="log" if log else "linear")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
