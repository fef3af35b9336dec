"""The demo and two-network pipelines: train both networks, probe, sweep, analyze, report.

Each step is the same function its own subcommand runs; this module only strings them together.
"""
from __future__ import annotations

import time
from pathlib import Path

from convlens.errors import ConfigError
from convlens.rundir import SweepDir
from convlens.specs.demo import DemoJob, StepSpec
from convlens.specs.load import step_job as load_step


def step_job(step: StepSpec, kind: str, extra: dict):
    """Load a step's spec with its overrides, then the pipeline's own (root, run names)."""
    return load_step(step.spec, kind, {**step.overrides, **extra})


def banner(text: str) -> float:
    print(f"\n[convlens] === {text} ===", flush=True)
    return time.time()


def run_demo(job: DemoJob) -> Path:
    from convlens.training.run import train
    root = Path(job.root).expanduser().resolve()
    start = time.time()
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
        banner(f"training the {name} network")
        train(train_job)
    outputs = list(runs)
    if probe_job:
        from convlens.probes import probe
        banner("probing frozen features (linear, MLP, kNN)")
        probe(probe_job)
    if sweep_job:
        from convlens.sweep.tune_runner import sweep
        banner("sweeping with Ray Tune")
        sweep(sweep_job, resume=(sweep_job.sweep_dir / SweepDir.TUNER).is_file())  # a rerun keeps its trials
        outputs.append(str(sweep_job.sweep_dir))
    if analysis_job:
        from convlens.analysis.job import analyze
        banner("analysing checkpoints")
        outputs.append(str(analyze(analysis_job)))
    if job.report:
        from convlens.report.page import write_report
        banner("writing the report")
        report = write_report(outputs, out=str(root / "report.html"))
        print(f"[convlens] demo finished in {time.time() - start:.0f} s; open {report}", flush=True)
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
