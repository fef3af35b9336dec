"""`convlens analyze SPEC`: every chosen method on every chosen checkpoint, as Ray tasks.

Each task rebuilds its checkpoint's model and test data, runs one method and writes its
PNGs and JSON atomically; the driver then writes index.json and the compare pages.
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path

from convlens.analysis import base
from convlens.base.errors import ConfigError
from convlens.base.progress import Progress, progress_mode
from convlens.raycluster.connect import ensure_ray
from convlens.raycluster.env import forwarded_env
from convlens.specs.analyze import AnalyzeJob, AnalyzeOptions
from convlens.storage.checkpoint import best_checkpoint, checkpoint_epoch, verify
from convlens.storage.rundir import AnalysisDir, RunDir
from convlens.testing import faults


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
    """(run name, epoch, folder) for every checkpoint to analyze; each verified here, in the
    driver, so a refused checkpoint stops the job before any task starts (CheckpointError)."""
    out = []
    for run in job.runs:
        run_dir = Path(run).expanduser().resolve()
        if not run_dir.is_dir():
            raise ConfigError(f"runs: {run_dir} is not a directory")
        out += [(run_dir.name, checkpoint_epoch(f), f) for f in select(run_dir, job.epochs)]
    out += [(Path(c).resolve().parent.name, checkpoint_epoch(c), Path(c).resolve()) for c in job.checkpoints]
    for _, _, folder in out:
        verify(folder)
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
    from convlens.analysis import compare
    from convlens.analysis.tables import BUILDERS
    from convlens.tracking.jobs import close_job, open_linked_runs
    from convlens.tracking.media import log_analysis

    t0 = time.time()
    methods = check_methods(job)
    chosen = targets(job)
    out = job.out_dir
    out.mkdir(parents=True, exist_ok=True)
    ensure_ray(quiet=job.quiet)
    # each analysed training run's own W&B run, open for the whole job: its system metrics and console
    runs = open_linked_runs("analysis", [f.parent for _, _, f in chosen], job.name, out,
                            {"analysis": job.name, "methods": sorted(methods)}, started=t0)
    done = False
    try:
        entries, tables = run_tasks(job, methods, chosen, out)
        singles = [e for e in entries if e["method"] != compare.NAME]  # composites: W&B's step slider does that
        wandb_ids = log_analysis(runs, singles, BUILDERS)
        index = write_index(out, job.name, chosen, methods, entries, time.time() - t0, tables, wandb_ids)
        if not job.quiet:
            print(f"[convlens] analysis {job.name}: {len(entries)} files from {len(chosen)} checkpoints x "
                  f"{len(methods)} methods in {index['seconds']} s -> {out / AnalysisDir.INDEX}", flush=True)
        done = True
    finally:
        close_job(runs, failed=not done)
    return out


def run_tasks(job: AnalyzeJob, methods: list[str], chosen: list[tuple[str, int, Path]],
              out: Path) -> tuple[list[dict], dict]:
    """Every method on every chosen checkpoint as Ray tasks, then the compare pages, the trend
    plots and CKA; returns (index entries, the methods' number tables)."""
    import ray

    from convlens.analysis import compare, similarity, trends
    from convlens.analysis.registry import load_all

    folder_of = AnalysisDir(out).checkpoint_dir
    device = "cuda" if job.gpus_per_task > 0 else "cpu"
    # SPREAD: on several nodes the tasks go to all of them, not first to fill the driver's node
    resources = dict(num_cpus=job.cpus_per_task, num_gpus=job.gpus_per_task, max_retries=2,
                     scheduling_strategy="SPREAD", runtime_env={"env_vars": forwarded_env()})
    task = ray.remote(**resources)(analyze_one)
    opts = job.options
    refs = []
    for (run, epoch, folder), method in itertools.product(chosen, methods):
        meta = {"run": run, "epoch": epoch, "checkpoint": str(folder)}
        refs.append(task.remote(str(folder), [method], opts, str(folder_of(run, folder)), meta, device))
    similar = None  # CKA needs every checkpoint at once: one task, beside the others
    if job.similarity and len(chosen) > 1:
        pairs = compare.pairs(sorted({r for r, _, _ in chosen}), job.compare)
        similar = ray.remote(similarity.run).options(**resources).remote(
            [(r, e, str(f)) for r, e, f in chosen], pairs, opts, str(out), device)
    entries = gather(refs, job.quiet)
    entries += compare.write_pages(entries, out, job.compare, methods)
    tables = trends.collect(entries, {m: load_all()[m].table for m in methods})
    entries += trends.write_plots(tables, out, {(r, e): str(f) for r, e, f in chosen})
    if similar is not None:
        found, table = ray.get(similar)
        entries += found
        tables.update({similarity.NAME: table} if table else {})
    return entries, tables


def write_index(out: Path, name: str, chosen: list[tuple[str, int, Path]], methods: list[str],
                entries: list[dict], seconds: float, tables: dict | None = None,
                wandb_ids: dict[str, str] | None = None) -> dict:
    """index.json (format in rundir.AnalysisDir): the job, each method's words for the report,
    every file written, its path relative to `out`, and the methods' number tables."""
    from convlens.analysis import compare, similarity
    from convlens.analysis.registry import load_all
    about = {m: load_all()[m].describe() for m in methods}
    for step in (compare, similarity):  # the post-steps' words, where they wrote anything
        if any(e["method"] == step.NAME for e in entries):
            about[step.NAME] = step.ABOUT
    index = {"name": name, "runs": sorted({r for r, _, _ in chosen}), "methods": about,
             "checkpoints": [str(f) for _, _, f in chosen], "seconds": round(seconds, 1),
             "wandb_run_ids": wandb_ids or {},
             "files": [{**e, "file": str(Path(e["file"]).relative_to(out))} for e in entries],
             "tables": tables or {}}
    AnalysisDir(out).write_index(index)
    return index


def gather(refs: list, quiet: bool) -> list[dict]:
    """The tasks' index entries in submission order, showing progress as they finish."""
    import ray
    results, pending = {}, list(refs)
    progress = Progress("analysis", len(refs), progress_mode(quiet))
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=1)
            results.update({ref: ray.get(ref) for ref in ready})
            progress.update(len(ready))
    finally:
        progress.close()
    return [e for ref in refs for e in results[ref]]
