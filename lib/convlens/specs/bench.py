"""The bench job: training throughput of convlens's input pipeline vs the common baseline."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from convlens.specs.base import Strict
from convlens.specs.train import DataConfig, ModelConfig


class BenchJob(Strict):
    kind: Literal["bench"] = "bench"
    data: DataConfig = Field(default_factory=lambda: DataConfig(train_subset=8192))
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(layers=[1, 1, 1], width=16))
    batch_size: int = Field(128, gt=0)
    steps: int = Field(40, gt=0)  # per round
    rounds: int = Field(3, gt=0)
    warmup: int = Field(5, ge=0)
    loader_workers: int = Field(2, ge=0)  # baseline DataLoader processes
    threads: int = Field(2, gt=0)  # torch intra-op threads for the model
    channels_last: bool = True  # the model's memory format, as run.channels_last in training (all three)
    device: Literal["cpu", "cuda"] = "cpu"  # cuda: model, in-memory dataset and augmentation on the GPU
    bf16: bool = True  # autocast, as run.bf16 in training (cuda only)
    compile: bool = False  # torch.compile the model, as run.compile in training
    sources: list[Literal["model_only", "convlens", "dataloader_pil"]] = Field(
        default_factory=lambda: ["model_only", "convlens", "dataloader_pil"], min_length=1)
    # [C, H, W]: random uint8 images of this shape (data.train_subset of them, 10 classes) instead
    # of data.path; [3, 32, 32] is CIFAR-10's shape, for where CIFAR-10 cannot be downloaded.
    synthetic: list[int] | None = Field(None, min_length=3, max_length=3)
    out: str | None = None  # also write the figures as JSON here
