"""Any job kind run from its resolved spec: what `convlens <kind> SPEC` and a Slurm job both do."""
from __future__ import annotations

from convlens.base.errors import ConfigError
from convlens.specs.load import load_job, step_job


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
        from convlens.analysis.probes import probe
        return probe(job)
    if kind == "demo":
        from convlens.jobs.demo import run_demo
        return run_demo(job)
    if kind == "bench":
        from convlens.bench.pipeline import run_bench
        return run_bench(job)
    raise ValueError(f"no runner for kind {kind!r}")


def datasets(kind: str, job) -> list:
    """The DataConfigs a job trains on: a train job's, a sweep's base, a demo's networks and
    sweep, a bench's (unless synthetic). Analysis and probes read their runs' datasets."""
    from convlens.specs.base import validate
    from convlens.specs.sweep import base_spec
    from convlens.specs.train import TrainJob
    if kind == "train":
        return [job.data]
    if kind == "sweep":
        return [validate(TrainJob, base_spec(job), f"sweep base {job.base}").data]
    if kind == "bench":
        return [] if job.synthetic else [job.data]
    if kind == "demo":
        steps = [step_job(s.spec, "train", s.overrides) for s in (job.supervised, job.rotation) if s]
        sweep = [step_job(job.sweep.spec, "sweep", job.sweep.overrides)] if job.sweep else []
        return [s.data for s in steps] + [d for s in sweep for d in datasets("sweep", s)]
    raise ConfigError(f"fetch-data: a {kind} spec trains nothing; give the train, sweep, demo or bench spec "
                      f"whose datasets to fetch")


def fetch_data(spec, overrides=()) -> list[str]:
    """Download and verify every dataset the spec trains on; prints (and returns) one line each."""
    from convlens.data.load import fetch_and_verify
    job = load_job(spec, list(overrides))
    seen, lines = set(), []
    for cfg in datasets(job.kind, job):
        key = (cfg.dataset, cfg.path, cfg.download, cfg.mirror)
        if key not in seen:
            seen.add(key)
            lines.append(fetch_and_verify(cfg))
            print(f"[convlens] {lines[-1]}", flush=True)
    if not lines:
        print("[convlens] nothing to fetch: the spec trains on synthetic data", flush=True)
    return lines
