"""The probe job: linear, MLP and kNN probes on frozen features of each run's best checkpoint."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from convlens.specs.base import Strict


class ProbeJob(Strict):
    kind: Literal["probe"] = "probe"
    runs: list[str]  # run directories; each one's best checkpoint is probed
    stages: list[int] = Field(default_factory=lambda: [2, 3])  # 1-based stages to read
    pool: int = Field(2, ge=1)  # adaptive average pool to pool x pool before flattening
    knn_k: int = Field(20, gt=0)
    knn_temperature: float = Field(0.07, gt=0)
    probe_epochs: int = Field(15, gt=0)
    max_train: int | None = Field(20000, gt=0)  # training images used to fit the probes
    seed: int = 0
