"""Any job spec from its file: read, override, validate as the kind it declares."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from convlens.base.errors import ConfigError
from convlens.specs.analyze import AnalyzeJob
from convlens.specs.base import apply_overrides, parse_overrides, read_yaml, validate
from convlens.specs.bench import BenchJob
from convlens.specs.demo import DemoJob
from convlens.specs.probe import ProbeJob
from convlens.specs.sweep import SweepJob
from convlens.specs.train import TrainJob

KINDS: dict[str, type[BaseModel]] = {
    "train": TrainJob, "sweep": SweepJob, "analyze": AnalyzeJob, "probe": ProbeJob, "demo": DemoJob,
    "bench": BenchJob,
}


def job_class(kind: str) -> type[BaseModel]:
    if kind not in KINDS:
        raise ConfigError(f"kind = {kind!r}: expected one of {sorted(KINDS)}")
    return KINDS[kind]


def load_job(path: str | Path, overrides: list[str] = (), kind: str | None = None):
    """Read a spec file, apply overrides and validate it as the job kind it declares."""
    spec = apply_overrides(read_yaml(path), parse_overrides(list(overrides)))
    kind = kind or spec.get("kind", "train")
    if spec.get("kind", kind) != kind:
        raise ConfigError(f"{path}: kind = {spec.get('kind')!r}, but this command runs {kind!r} specs")
    spec.setdefault("kind", kind)
    return validate(job_class(kind), spec, f"{kind} spec {path}")


def step_job(path: str | Path, kind: str, overrides: dict):
    """A job of a pipeline step: its spec file with dotted overrides given as a dict."""
    spec = apply_overrides(read_yaml(path), dict(overrides))
    spec.setdefault("kind", kind)
    return validate(job_class(kind), spec, f"{kind} step {path}")
