"""The sweep job: a base train spec, the space searched, and how trials are scheduled."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_serializer, model_validator

from convlens.base.errors import ConfigError
from convlens.specs.base import RUN_NAME, Strict, apply_overrides, flatten, has_field, read_yaml, validate
from convlens.specs.train import TrainJob

RANGES = ("uniform", "loguniform", "randint")
KINDS = ("choice", "grid", *RANGES)


class Distribution(Strict):
    """One searched field, written {choice: [...]}, {grid: [...]} or {uniform|loguniform|randint: [lo, hi]}
    (randint's hi is exclusive, as in Tune)."""
    kind: Literal["choice", "grid", "uniform", "loguniform", "randint"]
    args: list[Any] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, value):
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in KINDS:
            kind, args = next(iter(value.items()))
            return {"kind": kind, "args": args}
        if isinstance(value, dict) and set(value) == {"kind", "args"}:
            return value
        raise ValueError(f"expected one of {{{'|'.join(KINDS)}: [...]}}, got {value!r}")

    @model_validator(mode="after")
    def _range(self):
        if self.kind in RANGES:
            lo_hi = self.args
            if len(lo_hi) != 2 or not all(isinstance(a, (int, float)) for a in lo_hi) or not lo_hi[0] < lo_hi[1]:
                raise ValueError(f"{self.kind} = {lo_hi!r}: expected [lo, hi] with lo < hi")
            if self.kind == "loguniform" and lo_hi[0] <= 0:
                raise ValueError(f"loguniform = {lo_hi!r}: lo must be > 0")
        return self

    @model_serializer
    def _to_yaml(self) -> dict:
        return {self.kind: list(self.args)}

    def is_grid(self, search: str) -> bool:
        """Enumerated rather than drawn: a grid, or any choice when search is grid."""
        return self.kind == "grid" or (search == "grid" and self.kind == "choice")

    def candidates(self) -> list:
        """Values worth validating against the train spec: every listed value, or both ends."""
        if self.kind == "randint":
            return [self.args[0], self.args[1] - 1]
        return list(self.args)


PERTURBABLE = ("optim.lr", "optim.momentum", "optim.weight_decay")  # what PBT may change while training
SCALARS = (bool, int, float, str)  # what Optuna's categorical distribution takes


class SchedulerConfig(Strict):
    name: Literal["asha", "pbt", "none"] = "asha"
    grace_period: int = Field(1, gt=0)  # epochs every trial gets before ASHA may stop it
    reduction_factor: int = Field(2, gt=1)  # keep 1/reduction_factor of the trials at each rung
    perturbation_interval: int = Field(1, gt=0)  # PBT: epochs between a trial's exploit/explore steps
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)  # PBT: the bottom fraction copies the top one
    resample_probability: float = Field(0.25, ge=0, le=1)  # PBT: redraw a value rather than scale it 0.8x/1.2x
    synch: bool = False  # PBT: every trial waits at each perturbation_interval until all have reported there
    metric: Literal["val_error"] = "val_error"
    mode: Literal["min"] = "min"


class TrialResources(Strict):
    """Overrides the base spec's run.workers / cpus_per_worker / use_gpu / gpus_per_worker when set."""
    workers: int | None = Field(None, gt=0)
    cpus_per_worker: float | None = Field(None, gt=0)
    use_gpu: bool | None = None
    gpus_per_worker: float | None = Field(None, gt=0, le=1)  # < 1 packs several trials on one GPU
    trial_cpus: float = Field(0.5, gt=0)  # the trial function itself (its Train workers come on top)


class SweepJob(Strict):
    kind: Literal["sweep"] = "sweep"
    name: str = Field("sweep", pattern=RUN_NAME)
    root: str = "runs"  # sweep directory is <root>/<name>
    base: str  # a train spec YAML
    base_overrides: dict[str, Any] = Field(default_factory=dict)  # dotted keys (or nested sections)
    space: dict[str, Distribution] = Field(default_factory=dict)  # dotted TrainJob field -> distribution
    search: Literal["random", "grid", "tpe"] = "random"  # grid: every entry is a grid (choice counts as one);
    # tpe: Optuna's TPE proposes each trial from the results so far (no grid entries)
    num_samples: int = Field(4, gt=0)  # random, tpe: trials; grid: repeats of the whole grid
    max_concurrent: int = Field(2, gt=0)  # capped further so the trials' Train workers fit
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    resources: TrialResources = Field(default_factory=TrialResources)
    tracking_group: str | None = None  # W&B group of every trial; default: the sweep name
    seed: int = 0  # the trials' draws, the same for a Tune sweep and `submit --array`

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, spec):
        if isinstance(spec, dict):
            spec = dict(spec)
            spec["base_overrides"] = flatten(spec.get("base_overrides") or {})
            spec["space"] = flatten_space(spec.get("space") or {})
        return spec

    @model_validator(mode="after")
    def _check(self):
        if not self.space:
            raise ValueError("space: empty; name at least one dotted TrainJob field to search")
        base = base_spec(self)
        for key, dist in self.space.items():
            if not has_field(TrainJob, key):
                raise ValueError(f"space.{key}: no such TrainJob field")
            if dist.kind in RANGES and self.search == "grid":
                raise ValueError(f"space.{key}: {dist.kind} cannot be enumerated; search: grid needs choice or grid")
            for value in dist.candidates():
                check_train(apply_overrides(copy.deepcopy(base), {key: value}), f"space.{key} = {value!r}")
        self._check_search()
        epochs = check_train(base, "base").run.epochs
        if self.scheduler.name == "asha" and self.scheduler.grace_period >= epochs:
            raise ValueError(f"scheduler.grace_period: {self.scheduler.grace_period} leaves ASHA nothing to "
                             f"stop in the base's {epochs} epochs; choose fewer than {epochs}")
        if self.scheduler.synch and self.scheduler.name != "pbt":
            raise ValueError(f"scheduler.synch: true applies to PBT only, not scheduler.name: {self.scheduler.name}")
        if self.scheduler.name == "pbt" and self.scheduler.perturbation_interval >= epochs:
            raise ValueError(f"scheduler.perturbation_interval: {self.scheduler.perturbation_interval} leaves PBT "
                             f"no perturbation in the base's {epochs} epochs; choose fewer than {epochs}")
        return self

    def _check_search(self) -> None:
        """What TPE and PBT cannot take, refused before any trial starts."""
        if self.search == "tpe":
            for key, dist in self.space.items():
                if dist.kind == "grid":
                    raise ValueError(f"space.{key}: grid cannot be searched by TPE (search: tpe); "
                                     f"use choice or a range, or search: grid")
                if dist.kind == "choice" and not all(isinstance(v, SCALARS) for v in dist.args):
                    raise ValueError(f"space.{key}: TPE (search: tpe) chooses among numbers, strings or "
                                     f"booleans only, not {dist.args!r}")
        if self.scheduler.name == "pbt":
            if self.search == "tpe":
                raise ValueError("scheduler.name: pbt picks each trial's next values itself; "
                                 "use it with search: random or grid, not tpe")
            if not self.perturbed:
                raise ValueError(f"scheduler.name: pbt has nothing to perturb: space has none of "
                                 f"{', '.join(PERTURBABLE)}")

    @property
    def perturbed(self) -> list[str]:
        """The space's keys PBT perturbs (scheduler.name: pbt)."""
        return [key for key in PERTURBABLE if key in self.space]

    @property
    def sweep_dir(self) -> Path:
        return Path(self.root).expanduser().resolve() / self.name

    @property
    def group(self) -> str:
        return self.tracking_group or self.name


def flatten_space(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Like flatten, but stops at the {distribution: args} leaves."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and not (set(value) & {*KINDS, "kind"}):
            out.update(flatten_space(value, path + "."))
        else:
            out[path] = value
    return out


def base_spec(job: SweepJob) -> dict:
    """The base train spec with base_overrides and the sweep-wide settings applied, validated."""
    path = Path(job.base).expanduser()
    if not path.is_file():
        raise ValueError(f"base = {job.base!r}: train spec not found")
    spec = read_yaml(path)
    if spec.setdefault("kind", "train") != "train":
        raise ValueError(f"base = {job.base!r}: kind = {spec['kind']!r}, expected a train spec")
    spec = apply_overrides(spec, dict(job.base_overrides))
    res = job.resources
    spec = apply_overrides(spec, {f"run.{k}": v for k, v in
                                  (("workers", res.workers), ("cpus_per_worker", res.cpus_per_worker),
                                   ("use_gpu", res.use_gpu),
                                   ("gpus_per_worker", res.gpus_per_worker)) if v is not None})
    spec = apply_overrides(spec, {"tracking.group": job.group})
    check_train(spec, f"base {job.base} with base_overrides")
    return spec


def check_train(spec: dict, source: str) -> TrainJob:
    """Validate a train spec inside the sweep's validator (a ValueError there names the sweep field)."""
    try:
        return validate(TrainJob, spec, source)
    except ConfigError as err:
        raise ValueError(str(err)) from None
