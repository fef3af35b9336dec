"""The analyze job: which runs and checkpoints, which methods, and their knobs."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from convlens.specs.base import RUN_NAME, Strict

EpochChoice = int | Literal["best", "last"]


class AnalyzeOptions(Strict):
    """Per-method knobs, shipped to every analysis task as they are."""
    num_images: int = Field(128, gt=0)  # test images each method looks at
    num_train: int = Field(1024, gt=0)  # train images indexed for kNN
    layer: str | None = None  # stage for Grad-CAM / guided / deconv, e.g. "layer3" (default: last)
    channel: int | None = Field(None, ge=0)  # deconv channel (default: most active)
    topk: int = Field(6, gt=0)  # deconv top-activating images; 2 right + 2 wrong per class for CAMs
    inversion_steps: int = Field(50, gt=0)  # Adam steps per stage, from noise
    tv_weight: float = Field(1e-3, ge=0)  # total-variation prior weight
    tsne_points: int = Field(300, gt=5)
    knn_k: int = Field(10, gt=0)
    batch_size: int = Field(256, gt=0)
    faithfulness_steps: int = Field(16, ge=2, le=63)  # deletion / insertion curve points - 1
    faithfulness_fill: Literal["mean", "road"] = "mean"  # removed pixels: dataset mean, or ROAD imputation
    seed: int = 0  # picks the test / train images


class AnalyzeJob(Strict):
    kind: Literal["analyze"] = "analyze"
    name: str = Field("analysis", pattern=RUN_NAME)
    out: str | None = None  # default runs/analysis/<name>
    runs: list[str] = Field(default_factory=list)  # run directories
    epochs: list[EpochChoice] | Literal["all", "best", "last"] = "last"  # which checkpoints of each run
    checkpoints: list[str] = Field(default_factory=list)  # explicit checkpoint folders, besides runs
    methods: list[str] | None = None  # default: every registered method (checked against the registry)
    options: AnalyzeOptions = Field(default_factory=AnalyzeOptions)
    cpus_per_task: float = Field(1.0, gt=0)
    gpus_per_task: float = Field(0.0, ge=0)  # fractional GPUs share one device
    compare: list[tuple[str, str]] | Literal["all", "none"] = "all"  # run pairs, by run name
    similarity: bool = True  # linear CKA between the compare pairs' stages and between each run's epochs
    quiet: bool = False

    @model_validator(mode="after")
    def _checks(self):
        if not self.runs and not self.checkpoints:
            raise ValueError("runs and checkpoints are both empty: nothing to analyze")
        return self

    @property
    def out_dir(self) -> Path:
        return Path(self.out or f"runs/analysis/{self.name}").expanduser().resolve()
