"""`convlens analyze SPEC`: every chosen method on every chosen checkpoint, as Ray tasks.

Each task rebuilds its checkpoint's model and test data, runs one method and writes its
PNGs and JSON atomically; the driver then writes index.json and the compare pages.
"""
from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

from convlens import faults
from convlens.analysis import base
from convlens.checkpoint import best_checkpoint, checkpoint_epoch, verify
from convlens.errors import CheckpointError, ConfigError
from convlens.raycluster import ensure_ray, forwarded_env
from convlens.rundir import AnalysisDir, RunDir
from convlens.specs.analyze import AnalyzeJob, AnalyzeOptions


def check_methods(job: AnalyzeJob) -> list[str]:
    """The methods to run, each known to the registry; unknown names fail naming the field."""
    from convlens.analysis.registry import names
    unknown = sorted(set(job.methods or []) - set(names()))
    if unknown:
        raise ConfigError(f"methods: unknown {unknown}; known: {names()}")
    return job.methods or names()


# ------------------------------------------------------------ which checkpoints

def run_epochs(run_dir: Path) -> dict[int, Path]:
    """epoch -> folder over checkpoint_epoch* and best_epoch* (the former preferred)."""
    run = RunDir(run_dir)
    found = {checkpoint_epoch(p): p for p in run.bests()}
    found.update({checkpoint_epoch(p): p for p in run.checkpoints()})
    return dict(sorted(found.items()))


def select(run_dir: Path, epochs) -> list[Path]:
    run_dir = Path(run_dir)
    available = run_epochs(run_dir)
    if not available:
        raise ConfigError(f"runs: {run_dir} has no {RunDir.CHECKPOINT}* or {RunDir.BEST}* folders")
    if epochs == "all":
        return list(available.values())
    chosen = []
    for e in [epochs] if isinstance(epochs, str) else epochs:
        if e == "best":
            best = best_checkpoint(run_dir)
            if best is None:
                raise ConfigError(f"epochs: best requested but {run_dir} has no verified {RunDir.BEST}*")
            folder = available.get(checkpoint_epoch(best), best)
        elif e == "last":
            folder = available[max(available)]
        elif e in available:
            folder = available[e]
        else:
            raise ConfigError(f"epochs: {run_dir} has no checkpoint for epoch {e}; has {sorted(available)}")
        if folder not in chosen:
            chosen.append(folder)
    return chosen


def targets(job: AnalyzeJob) -> list[tuple[str, int, Path]]:
    """(run name, epoch, folder) for every checkpoint to analyze; each verified up front."""
    out = []
    for run in job.runs:
        run_dir = Path(run).expanduser().resolve()
        if not run_dir.is_dir():
            raise ConfigError(f"runs: {run_dir} is not a directory")
        out += [(run_dir.name, checkpoint_epoch(f), f) for f in select(run_dir, job.epochs)]
    out += [(Path(c).resolve().parent.name, checkpoint_epoch(c), Path(c).resolve()) for c in job.checkpoints]
    for _, _, folder in out:
        try:
            verify(folder)
        except CheckpointError as err:
            raise ConfigError(f"checkpoint {folder}: {err}") from None
    return out


# ------------------------------------------------------------ the Ray task

def analyze_one(folder: str, methods: list[str], opts: AnalyzeOptions, out_dir: str, meta: dict,
                device: str) -> list[dict]:
    """Methods on one checkpoint (the driver sends one per task, so a failure and its retry
    stay with that method); returns their index entries."""
    from convlens.analysis.runner import run_method
    ctx = base.build_context(Path(folder), opts, device, title=f"{meta['run']} / epoch {meta['epoch']}")
    entries = []
    for name in methods:
        entries += run_method(ctx, name, Path(out_dir), meta,
                              after_file=lambda _path, name=name: faults.after_file(Path(out_dir), name))
    return entries


def analyze(job: AnalyzeJob) -> Path:
    """Run the job; returns the output directory (with index.json)."""
    import ray

    from convlens.analysis import compare

    t0 = time.time()
    methods = check_methods(job)
    chosen = targets(job)
    out = job.out_dir
    folder_of = AnalysisDir(out).checkpoint_dir
    out.mkdir(parents=True, exist_ok=True)
    ensure_ray(quiet=job.quiet)
    device = "cuda" if job.gpus_per_task > 0 else "cpu"
    # SPREAD: on several nodes the tasks go to all of them, not first to fill the driver's node
    task = ray.remote(num_cpus=job.cpus_per_task, num_gpus=job.gpus_per_task, max_retries=2,
                      scheduling_strategy="SPREAD", runtime_env={"env_vars": forwarded_env()})(analyze_one)
    opts = job.options
    refs = []
    for (run, epoch, folder), method in itertools.product(chosen, methods):
        meta = {"run": run, "epoch": epoch, "checkpoint": str(folder)}
        refs.append(task.remote(str(folder), [method], opts, str(folder_of(run, folder)), meta, device))
    entries = gather(refs, job.quiet)
    entries += compare.write_pages(entries, out, job.compare, methods)
    index = write_index(out, job.name, chosen, methods, entries, time.time() - t0)
    log_to_wandb(entries)
    if not job.quiet:
        print(f"[convlens] analysis {job.name}: {len(entries)} files from {len(chosen)} checkpoints x "
              f"{len(methods)} methods in {index['seconds']} s -> {out / AnalysisDir.INDEX}", flush=True)
    return out


def write_index(out: Path, name: str, chosen: list[tuple[str, int, Path]], methods: list[str],
                entries: list[dict], seconds: float) -> dict:
    """index.json (format in rundir.AnalysisDir): the job, each method's words for the report,
    and every file written, its path relative to `out`."""
    from convlens.analysis.compare import ABOUT, NAME
    from convlens.analysis.registry import load_all
    about = {m: load_all()[m].describe() for m in methods}
    if any(e["method"] == NAME for e in entries):
        about[NAME] = ABOUT
    index = {"name": name, "runs": sorted({r for r, _, _ in chosen}), "methods": about,
             "checkpoints": [str(f) for _, _, f in chosen], "seconds": round(seconds, 1),
             "files": [{**e, "file": str(Path(e["file"]).relative_to(out))} for e in entries]}
    AnalysisDir(out).write_index(index)
    return index


def gather(refs: list, quiet: bool) -> list[dict]:
    """The tasks' index entries in submission order, printing progress as they finish."""
    import ray
    results, pending = {}, list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=10)
        results.update({ref: ray.get(ref) for ref in ready})
        if ready and not quiet:
            print(f"[convlens] analysis: {len(results)}/{len(refs)} tasks done", flush=True)
    return [e for ref in refs for e in results[ref]]


def log_to_wandb(entries: list[dict]) -> None:
    """Each analysed run's figures (captioned images) and kNN / embedding numbers (tables) go
    to that run's own W&B run, with the tracking settings of its config.yaml."""
    from convlens.specs.base import read_yaml, validate
    from convlens.specs.train import TrainJob
    from convlens.tracking import open_tracker
    runs: dict[Path, list[dict]] = {}
    for entry in entries:
        runs.setdefault(Path(entry["checkpoint"]).parent, []).append(entry)
    for run_dir, items in runs.items():
        config = run_dir / RunDir.CONFIG
        if not config.is_file():  # an explicit checkpoint outside a run directory
            continue
        try:
            train_job = validate(TrainJob, read_yaml(config), str(config))
        except ConfigError as err:
            print(f"[convlens] not logging the analysis of {run_dir} to W&B: {err}", flush=True)
            continue
        tracker = open_tracker(train_job, run_dir)
        try:
            log_run_analysis(tracker, items)
        finally:
            tracker.finish()


def log_run_analysis(tracker, items: list[dict]) -> None:
    from convlens.analysis.registry import load_all
    registry = load_all()
    methods = sorted({e["method"] for e in items})
    for method in methods:
        tracker.log_images([(e["file"], f"epoch {e['epoch']}: {e['caption']}") for e in items
                            if e["method"] == method and e["file"].endswith(".png")], key=f"analysis/{method}")
    for method in methods:
        columns = list(registry[method].table) if method in registry else []
        if not columns:
            continue
        rows = []
        for e in items:
            if e["method"] == method and e["file"].endswith(".json"):
                result = json.loads(Path(e["file"]).read_text())["result"]
                rows.append([e["epoch"], *(result.get(c) for c in columns)])
        if rows:
            tracker.log_table(f"analysis/{method}", ["epoch", *columns], sorted(rows))
