"""The demo and two-network pipelines: train both networks, probe, sweep, analyze, report.

Each step is the same function its own subcommand runs; this module only strings them together,
and records each step's wall time and the machine in <root>/timings.json (the README's results
block reads it).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from convlens.base.errors import ConfigError
from convlens.specs.demo import DemoJob, StepSpec
from convlens.specs.load import step_job as load_step
from convlens.storage.files import write_json
from convlens.storage.rundir import DemoDir, SweepDir


def step_job(step: StepSpec, kind: str, extra: dict):
    """Load a step's spec with its overrides, then the pipeline's own (root, run names)."""
    return load_step(step.spec, kind, {**step.overrides, **extra})


def banner(text: str) -> float:
    print(f"\n[convlens] === {text} ===", flush=True)
    return time.time()


def timed(steps: dict, name: str, text: str, fn, *args):
    """Run one step under its banner; steps[name] = its wall time in seconds."""
    start = banner(text)
    out = fn(*args)
    steps[name] = time.time() - start
    return out


def machine() -> dict:
    """What the timings were measured on: CPUs this process may use, and memory."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpus": len(os.sched_getaffinity(0)), "memory_gib": round(memory / 2**30, 1)}


def run_demo(job: DemoJob) -> Path:
    from convlens.training.run import train
    root = Path(job.root).expanduser().resolve()
    start, steps = time.time(), {}
    # Every step's spec is validated before the first one starts.
    group = root.name  # W&B: every run of the demo in one group
    train_jobs = {name: step_job(step, "train", {"run.root": str(root), "run.quiet": job.quiet,
                                                 "tracking.group": group})
                  for name, step in (("supervised", job.supervised), ("rotation", job.rotation)) if step}
    runs = [str(t.run_dir) for t in train_jobs.values()]
    probe_job = step_job(job.probes, "probe", {"runs": runs}) if job.probes else None
    sweep_job = step_job(job.sweep, "sweep", {"root": str(root), "tracking_group": group}) if job.sweep else None
    analysis_job = (step_job(job.analysis, "analyze", {"runs": runs, "out": str(root / "analysis")})
                    if job.analysis else None)
    if analysis_job:
        check_epochs_kept(train_jobs, analysis_job.epochs)
    for name, train_job in train_jobs.items():
        timed(steps, name, f"training the {name} network", train, train_job)
    outputs = list(runs)
    if probe_job:
        from convlens.analysis.probes import probe
        timed(steps, "probes", "probing frozen features (linear, MLP, kNN)", probe, probe_job)
    if sweep_job:
        from convlens.sweep.tune_runner import sweep
        resume = (sweep_job.sweep_dir / SweepDir.TUNER).is_file()  # a rerun keeps its trials
        timed(steps, "sweep", "sweeping with Ray Tune", sweep, sweep_job, resume)
        outputs.append(str(sweep_job.sweep_dir))
    if analysis_job:
        from convlens.analysis.job import analyze
        outputs.append(str(timed(steps, "analysis", "analysing checkpoints", analyze, analysis_job)))
    report = None
    if job.report:
        from convlens.report.page import write_report
        report = timed(steps, "report", "writing the report", write_report, outputs, str(root / "report.html"))
    seconds = time.time() - start
    write_json(root / DemoDir.TIMINGS, {"seconds": seconds, "steps": steps, "machine": machine()})
    if report:
        print(f"[convlens] demo finished in {seconds:.0f} s; open {report}", flush=True)
        return Path(report)
    return root


def check_epochs_kept(train_jobs: dict, epochs) -> None:
    """Fail now, not after training, if the analysis asks for an epoch Ray Train will delete."""
    wanted = [e for e in ([epochs] if isinstance(epochs, str) else epochs) if isinstance(e, int)]
    for name, train_job in train_jobs.items():
        run = train_job.run
        first_kept = run.epochs - run.keep_last + 1
        early = [e for e in wanted if e < first_kept]
        if early:
            raise ConfigError(f"analysis.overrides.epochs: {name} keeps only its last {run.keep_last} of "
                              f"{run.epochs} epochs (run.keep_last), not epoch {early[0]}; set "
                              f"{name}.overrides.run.keep_last to {run.epochs - min(early) + 1}")
