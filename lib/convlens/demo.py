"""The demo and two-network pipelines: train both networks, probe, sweep, analyze, report.

Each step is the same function its own subcommand runs; this module only strings them together.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from convlens.config import Strict, apply_overrides, load_job, read_yaml, validate


class StepSpec(Strict):
    spec: str  # a job spec file
    overrides: dict[str, Any] = Field(default_factory=dict)  # dotted key -> value


class DemoJob(Strict):
    kind: Literal["demo"] = "demo"
    root: str = "runs/demo"  # every step writes below here
    supervised: StepSpec
    rotation: StepSpec | None = None
    probes: StepSpec | None = None
    sweep: StepSpec | None = None
    analysis: StepSpec | None = None
    report: bool = True
    quiet: bool = False


def step_job(step: StepSpec, kind: str, extra: dict):
    """Load a step's spec with its overrides, then the pipeline's own (root, run names)."""
    spec = apply_overrides(read_yaml(step.spec), {**step.overrides, **extra})
    spec.setdefault("kind", kind)
    from convlens.config import job_class
    return validate(job_class(kind), spec, f"{kind} step {step.spec}")


def banner(text: str) -> float:
    print(f"\n[convlens] === {text} ===", flush=True)
    return time.time()


def run_demo(job: DemoJob) -> Path:
    from convlens.training.run import train
    root = Path(job.root).expanduser().resolve()
    start = time.time()
    runs = []
    for name, step in (("supervised", job.supervised), ("rotation", job.rotation)):
        if step is None:
            continue
        banner(f"training the {name} network")
        train_job = step_job(step, "train", {"run.root": str(root), "run.quiet": job.quiet})
        train(train_job)
        runs.append(str(train_job.run_dir))
    outputs = list(runs)
    if job.probes:
        from convlens.probes import probe
        banner("probing frozen features (linear, MLP, kNN)")
        probe(step_job(job.probes, "probe", {"runs": runs}))
    if job.sweep:
        from convlens.tuning import sweep
        banner("sweeping with Ray Tune")
        sweep_job = step_job(job.sweep, "sweep", {"root": str(root)})
        sweep(sweep_job, resume=False)
        outputs.append(str(sweep_job.sweep_dir))
    if job.analysis:
        from convlens.analysis.job import analyze
        banner("analysing checkpoints")
        outputs.append(str(analyze(step_job(job.analysis, "analyze",
                                            {"runs": runs, "out": str(root / "analysis")}))))
    if job.report:
        from convlens.report import write_report
        banner("writing the report")
        report = write_report(outputs, out=str(root / "report.html"))
        print(f"[convlens] demo finished in {time.time() - start:.0f} s; open {report}", flush=True)
        return Path(report)
    return root
