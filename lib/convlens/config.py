"""Typed job specs: YAML file + dotted overrides, validated before any work starts.

Every job kind (train, sweep, analyze, report, demo) has one pydantic model here.
Unknown keys, wrong types and impossible values raise ConfigError naming the field.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A spec or override is invalid; the message names the field and the value."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, validate_default=True)


RUN_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
DATASETS = ("fashion_mnist", "cifar10", "image_folder")


class DataConfig(Strict):
    dataset: Literal["fashion_mnist", "cifar10", "image_folder"] = "fashion_mnist"
    # Folder with the dataset files (IDX files, cifar-10-batches-py/, or class sub-folders).
    path: str = "/usr/share/datasets/fashion-mnist"
    download: bool = False  # cifar10 only: fetch with torchvision when missing
    image_size: int = Field(32, gt=0)  # image_folder only: every image resized to this square
    batch_size: int = Field(128, gt=0)  # global batch, split evenly across workers
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)  # held out from train, seeded
    crop_padding: int = Field(4, ge=0)  # random crop after zero padding; 0 disables
    flip: bool = True  # random horizontal flip
    train_subset: int | None = Field(None, gt=0)  # use only N training images (smoke runs)
    test_subset: int | None = Field(None, gt=0)
    corrupt_images: Literal["fail", "skip"] = "fail"  # image_folder: unreadable files
    cache_dir: str = "~/.cache/convlens"


class ModelConfig(Strict):
    block: Literal["basic", "bottleneck"] = "basic"
    layers: list[int] = Field(default_factory=lambda: [2, 2, 2, 2])  # blocks per stage
    width: int = Field(64, gt=0)  # channels of the first stage, doubled per stage
    stem: Literal["cifar", "imagenet"] = "cifar"
    sync_bn: bool = False  # SyncBatchNorm across DDP workers
    pretrained: str | None = None  # local torchvision-format state_dict (.pth)

    @model_validator(mode="after")
    def _layers(self):
        if not 1 <= len(self.layers) <= 4 or any(n < 1 for n in self.layers):
            raise ValueError(f"model.layers = {self.layers}: need 1 to 4 stages of >= 1 block each")
        return self


class OptimConfig(Strict):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # sgd only
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)


class ScheduleConfig(Strict):
    name: Literal["multistep", "cosine", "onecycle", "constant"] = "multistep"
    milestones: list[int] = Field(default_factory=list)  # epochs where lr *= gamma
    gamma: float = Field(0.1, gt=0.0, le=1.0)


class TrackingConfig(Strict):
    mode: Literal["online", "offline", "disabled"] = "disabled"  # WANDB_MODE overrides
    project: str = "convlens"
    entity: str | None = None
    group: str | None = None
    dir: str | None = None  # where wandb writes; default: the run directory
    init_timeout: float = Field(20.0, gt=0)  # seconds before online falls back to offline
    log_checkpoints: bool = False  # upload best and final checkpoints as artifacts


class RunSection(Strict):
    name: str = Field("run", pattern=RUN_NAME)
    root: str = "runs"  # run directory is <root>/<name>
    task: Literal["supervised", "rotation"] = "supervised"
    epochs: int = Field(10, gt=0)
    seed: int = 0
    workers: int = Field(1, gt=0)
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool = False
    bf16: bool = True  # autocast on GPU only
    channels_last: bool = True  # NHWC activations: faster convolutions on GPU and on CPU
    compile: bool = False  # torch.compile the model (GPU)
    keep_last: int = Field(2, gt=0)  # checkpoints kept besides the best
    max_failures: int = Field(1, ge=0)  # worker-group restarts before the run fails
    on_corrupt_checkpoint: Literal["fallback", "stop"] = "fallback"
    steps_per_epoch: int | None = Field(None, gt=0)  # cap, for smoke runs
    eval_batch_size: int = Field(512, gt=0)
    quiet: bool = False


class FaultConfig(Strict):
    """Fault injection for the reliability tests; "rank:epoch:step" (1-based epoch), or null."""
    nan_at: str | None = Field(None, pattern=r"^\d+:\d+:\d+$")  # make that rank's loss NaN there
    kill_at: str | None = Field(None, pattern=r"^\d+:\d+:\d+$")  # SIGKILL that worker there
    kill_times: int = Field(1, ge=0)  # how many attempts the kill fires in (markers in the run dir)
    hold_at: str | None = Field(None, pattern=r"^\d+:\d+:\d+$")  # that worker sleeps there, once
    hold_seconds: float = Field(60.0, gt=0)  # (a test acts meanwhile: kills the driver, say)


class TrainJob(Strict):
    kind: Literal["train"] = "train"
    run: RunSection = Field(default_factory=RunSection)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    faults: FaultConfig = Field(default_factory=FaultConfig)

    @model_validator(mode="after")
    def _cross_checks(self):
        late = [m for m in self.schedule.milestones if m >= self.run.epochs]
        if late:
            raise ValueError(
                f"schedule.milestones = {self.schedule.milestones}: {late} not before the last epoch "
                f"(run.epochs = {self.run.epochs})")
        if self.data.batch_size % self.run.workers:
            raise ValueError(
                f"data.batch_size = {self.data.batch_size}: not divisible across run.workers = {self.run.workers}")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.run.root).expanduser().resolve() / self.run.name


# ---------------------------------------------------------------- loading

def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['optim.lr=0.05', 'model.layers=[1,1]'] -> {'optim.lr': 0.05, 'model.layers': [1, 1]}."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
            raise ConfigError(f"override {item!r}: expected dotted.key=value")
        out[key] = yaml.safe_load(raw) if raw != "" else None
    return out


def apply_overrides(spec: dict, overrides: dict[str, Any]) -> dict:
    for key, value in overrides.items():
        node = spec
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {key}: {part} is not a section")
            node = child
        node[leaf] = value
    return spec


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"spec file {path}: not found")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"spec file {path}: not valid YAML ({err})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"spec file {path}: top level must be a mapping")
    return spec


def validate(model_cls: type[BaseModel], spec: dict, source: str = "spec"):
    try:
        return model_cls.model_validate(spec)
    except ValidationError as err:
        raise ConfigError(format_errors(err, spec, source)) from None


def format_errors(err: ValidationError, spec: dict, source: str) -> str:
    lines = [f"invalid {source}:"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            lines.append(f"  {field}: unknown field")
        elif field:
            lines.append(f"  {field} = {e.get('input')!r}: {msg}")
        else:
            lines.append(f"  {msg}")
    return "\n".join(lines)


def load_job(path: str | Path, overrides: list[str] = (), kind: str | None = None):
    """Read a spec file, apply overrides and validate it as the job kind it declares."""
    spec = apply_overrides(read_yaml(path), parse_overrides(list(overrides)))
    kind = kind or spec.get("kind", "train")
    if spec.get("kind", kind) != kind:
        raise ConfigError(f"{path}: kind = {spec.get('kind')!r}, but this command runs {kind!r} specs")
    spec.setdefault("kind", kind)
    return validate(job_class(kind), spec, f"{kind} spec {path}")


def job_class(kind: str) -> type[BaseModel]:
    """Job kinds live beside their code; each is imported only when used."""
    if kind not in JOB_KINDS:
        raise ConfigError(f"kind = {kind!r}: expected one of {sorted(JOB_KINDS)}")
    target = JOB_KINDS[kind]
    if isinstance(target, str):
        import importlib
        module, name = target.split(":")
        target = getattr(importlib.import_module(module), name)
    return target


def check_data_path(data: DataConfig) -> None:
    """A missing or empty dataset folder fails in the driver, naming data.path."""
    path = Path(os.path.expanduser(data.path))
    if data.dataset == "cifar10" and data.download:
        return
    if not path.exists():
        raise ConfigError(f"data.path = {data.path!r}: does not exist")
    if not path.is_dir():
        raise ConfigError(f"data.path = {data.path!r}: not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise ConfigError(f"data.path = {data.path!r}: not readable")
    if not any(path.iterdir()):
        raise ConfigError(f"data.path = {data.path!r}: is empty")


JOB_KINDS: dict[str, type[BaseModel] | str] = {
    "train": TrainJob,
    "sweep": "convlens.tuning:SweepJob",
    "analyze": "convlens.analysis.job:AnalyzeJob",
    "demo": "convlens.demo:DemoJob",
    "bench": "convlens.bench:BenchJob",
    "probe": "convlens.probes:ProbeJob",
}
