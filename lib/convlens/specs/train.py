"""The train job: run, data, model, optimizer, schedule and tracking sections."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from convlens.specs.base import RUN_NAME, Strict


# Where a dataset lives when data.path is unset: Debian's Fashion-MNIST (package
# dataset-fashion-mnist) when its folder holds the four archives, else the dataset's folder in the
# user cache, which convlens.data.download fetches into.
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_ARCHIVES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                          "t10k-labels-idx1-ubyte.gz")
DATA_ENV = "CONVLENS_DATA"  # root of the cache folders
DATA_CACHE = "~/.cache/convlens/datasets"
CACHE_FOLDERS = {"fashion_mnist": "fashion-mnist", "cifar10": "cifar10"}


def default_data_path(dataset: str) -> str:
    """fashion_mnist: Debian's folder when it holds the four archives; else (and cifar10)
    $CONVLENS_DATA/<folder> or ~/.cache/convlens/datasets/<folder>, made absolute."""
    debian = Path(DEBIAN_FASHION_MNIST)
    if dataset == "fashion_mnist" and all((debian / name).is_file() for name in FASHION_MNIST_ARCHIVES):
        return DEBIAN_FASHION_MNIST
    return str(Path(os.environ.get(DATA_ENV) or DATA_CACHE).expanduser().absolute() / CACHE_FOLDERS[dataset])


class RandomResizedCrop(Strict):
    """A random box of the image resampled to the output size (replaces data.crop_padding)."""
    scale: tuple[float, float] = (0.35, 1.0)  # area fraction of the image
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio, drawn log-uniform

    @model_validator(mode="after")
    def _ranges(self):
        for name, (lo, hi), top in (("scale", self.scale, 1.0), ("ratio", self.ratio, None)):
            if not 0 < lo <= hi or (top and hi > top):
                raise ValueError(f"{name} = {[lo, hi]}: need 0 < lo <= hi{' <= 1' if top else ''}")
        return self


class ColorJitter(Strict):
    """Per-image factors drawn from [1 - x, 1 + x], applied in this order (as torchvision)."""
    brightness: float = Field(0.4, ge=0, lt=1)
    contrast: float = Field(0.4, ge=0, lt=1)
    saturation: float = Field(0.4, ge=0, lt=1)  # no effect on one-channel images


class DataConfig(Strict):
    dataset: Literal["fashion_mnist", "cifar10", "image_folder"] = "fashion_mnist"
    # Folder with the dataset files (IDX files, cifar-10-batches-py/, or class sub-folders); unset:
    # default_data_path (image_folder needs one). Resolved here, so `convlens show` and the run's
    # config.yaml name the folder.
    path: str | None = None
    # fashion_mnist, cifar10: download what data.path lacks from the published locations and
    # verify the files' content; false reads data.path as it is, unverified.
    download: bool = True
    # Base URL of a site's copy of the published files (<mirror>/<file name>), replacing the
    # published locations; unset: $CONVLENS_DATA_MIRROR when set.
    mirror: str | None = None
    image_size: int = Field(32, gt=0)  # image_folder only: every image resized to this square
    batch_size: int = Field(128, gt=0)  # global batch, split evenly across workers
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)  # held out from train, seeded
    crop_padding: int = Field(4, ge=0)  # random crop after zero padding; 0 disables
    flip: bool = True  # random horizontal flip
    resize: int | None = Field(None, gt=0)  # every batch resized on the device to this square (e.g. 224)
    random_resized_crop: RandomResizedCrop | None = None
    color_jitter: ColorJitter | None = None
    train_subset: int | None = Field(None, gt=0)  # use only N training images (smoke runs)
    test_subset: int | None = Field(None, gt=0)
    corrupt_images: Literal["fail", "skip"] = "fail"  # image_folder in memory: unreadable files (streamed: skip)
    # image_folder: decode in Ray Data's CPU pool and stream each worker its shard (data/stream.py)
    # instead of holding the decoded split in every worker; auto: when the decoded training split
    # exceeds data.memory_budget_gb. A streamed run skips (and counts) unreadable images.
    stream: bool | Literal["auto"] = "auto"
    # what auto lets the decoded training split take; unset: a quarter of the node's memory (of
    # the job's per-node memory where Slurm grants one)
    memory_budget_gb: float | None = Field(None, gt=0)
    cache_dir: str = "~/.cache/convlens"

    @field_validator("path")
    @classmethod
    def _default_path(cls, path: str | None, info: ValidationInfo) -> str | None:
        dataset = info.data.get("dataset")  # absent when invalid: that error is reported
        if path is not None or dataset is None:
            return path
        if dataset == "image_folder":
            raise ValueError("required for data.dataset = 'image_folder': the folder of class sub-folders")
        return default_data_path(dataset)

    @field_validator("mirror")
    @classmethod
    def _url(cls, mirror: str | None) -> str | None:
        if mirror is not None and not re.match(r"(https?|ftp|file)://", mirror):
            raise ValueError("expected a base URL: http(s)://, ftp:// or file://")
        return mirror

    @model_validator(mode="after")
    def _streams_folders(self):
        if self.stream is True and self.dataset != "image_folder":
            raise ValueError(f"data.stream = true: only data.dataset = 'image_folder' streams, not {self.dataset!r}")
        return self

    @model_validator(mode="after")
    def _one_crop(self):
        if self.random_resized_crop is not None and self.crop_padding:
            raise ValueError(f"data.crop_padding = {self.crop_padding}: set it to 0 with "
                             f"data.random_resized_crop, which replaces the crop")
        return self


class ModelConfig(Strict):
    block: Literal["basic", "bottleneck"] = "basic"
    layers: list[int] = Field(default_factory=lambda: [2, 2, 2, 2])  # blocks per stage
    width: int = Field(64, gt=0)  # channels of the first stage, doubled per stage
    stem: Literal["cifar", "imagenet"] = "cifar"
    sync_bn: bool = False  # batch norm over the global batch of all DDP workers
    pretrained: str | None = None  # local torchvision-format state_dict (.pth)
    # Parts kept fixed while training (fine-tuning): weights and batch-norm statistics.
    freeze: list[Literal["stem", "layer1", "layer2", "layer3", "layer4"]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _layers(self):
        if not 1 <= len(self.layers) <= 4 or any(n < 1 for n in self.layers):
            raise ValueError(f"model.layers = {self.layers}: need 1 to 4 stages of >= 1 block each")
        missing = [p for p in self.freeze if p != "stem" and int(p[-1]) > len(self.layers)]
        if missing:
            raise ValueError(f"model.freeze = {self.freeze}: {missing} not in a model of {len(self.layers)} stages")
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
    mode: Literal["online", "offline", "disabled"] = "offline"  # WANDB_MODE overrides; offline: no account
    project: str = "convlens"
    entity: str | None = None
    group: str | None = None  # default: the run's name; a sweep's trials and the demo's runs share one
    tags: list[str] = Field(default_factory=list)  # besides task, dataset and model
    params: dict[str, Any] = Field(default_factory=dict)  # top-level W&B config keys (a trial's drawn values)
    dir: str | None = None  # where wandb writes; default: the run directory
    init_timeout: float = Field(20.0, gt=0)  # seconds before online falls back to offline
    log_checkpoints: bool | Literal["all"] = False  # `model-<run id>` artifacts: true best and last, all every kept one
    stats_interval: float = Field(15.0, ge=0.1)  # seconds between W&B system-metric samples (wandb's own monitor)


class RunSection(Strict):
    name: str = Field("run", pattern=RUN_NAME)
    root: str = "runs"  # run directory is <root>/<name>
    task: Literal["supervised", "rotation"] = "supervised"
    epochs: int = Field(10, gt=0)
    seed: int = 0
    workers: int = Field(1, gt=0)
    cpus_per_worker: float = Field(1.0, gt=0)
    # Ray Train's placement of the workers: pack fills one node first; spread puts them on
    # different nodes (on several nodes each then decodes its own part of a streamed folder)
    placement: Literal["pack", "spread"] = "pack"
    use_gpu: bool = False
    # A share of one GPU per worker (Ray's fractional GPUs): 0.25 packs four runs, or four sweep
    # trials, onto one card; one worker never spans GPUs.
    gpus_per_worker: float = Field(1.0, gt=0, le=1)
    # A running Ray cluster to join ("auto" finds one started with `ray start --head`); the
    # RAY_ADDRESS environment variable does the same; neither: convlens starts its own.
    ray_address: str | None = None
    bf16: bool = True  # autocast on GPU only
    channels_last: bool = True  # NHWC activations: faster convolutions on GPU and on CPU
    compile: bool = False  # torch.compile the model (GPU)
    keep_last: int = Field(2, gt=0)  # checkpoints kept besides the best
    max_failures: int = Field(1, ge=0)  # worker-group restarts before the run fails
    on_corrupt_checkpoint: Literal["fallback", "stop"] = "fallback"
    steps_per_epoch: int | None = Field(None, gt=0)  # cap, for smoke runs
    eval_batch_size: int = Field(512, gt=0)
    # batch-norm statistics recomputed on this many training images before each validation
    # (training/precise_bn.py); 0 validates with the running averages
    precise_bn_images: int = Field(4096, ge=0)
    quiet: bool = False


class TrainJob(Strict):
    kind: Literal["train"] = "train"
    run: RunSection = Field(default_factory=RunSection)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

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

    @property
    def group(self) -> str:
        """The W&B group of the run and of the analysis and probe runs linked to it."""
        return self.tracking.group or self.run.name
