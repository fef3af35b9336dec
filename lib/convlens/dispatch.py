"""Any job kind run from its resolved spec: what `convlens <kind> SPEC` and a Slurm job both do."""
from __future__ import annotations

from convlens.specs.load import load_job


def run_job(kind: str, spec, overrides=(), resume: bool = False, collect: bool = False):
    """Validate the spec and run its job; returns what the job's function returns."""
    job = load_job(spec, list(overrides), kind)
    if kind == "train":
        from convlens.training.run import train
        return train(job)
    if kind == "sweep":
        from convlens.sweep.array import collect_array
        from convlens.sweep.tune_runner import sweep
        return collect_array(job) if collect else sweep(job, resume=resume)
    if kind == "analyze":
        from convlens.analysis.job import analyze
        return analyze(job)
    if kind == "probe":
        from convlens.probes import probe
        return probe(job)
    if kind == "demo":
        from convlens.demo import run_demo
        return run_demo(job)
    if kind == "bench":
        from convlens.bench.pipeline import run_bench
        return run_bench(job)
    raise ValueError(f"no runner for kind {kind!r}")
