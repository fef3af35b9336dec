"""A trained network and its data, rebuilt from what a checkpoint recorded.

Every reader of checkpoints (the test evaluation, analysis tasks, probes) goes through
`load_model_and_data`: verified, weights-only, strict about the architecture. A streamed run's
data comes back as its folder's file index (FolderImages), so a reader decodes only the images
it takes; the normalization is the checkpoint's own, not measured again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from convlens.data.augment import Augment
from convlens.data.folder_images import FolderImages, folder_images
from convlens.data.images import ImageData
from convlens.data.load import load_dataset
from convlens.models.resnet import ResNet
from convlens.specs.train import DataConfig
from convlens.storage.checkpoint import load_checkpoint


@dataclass
class Loaded:
    model: ResNet  # eval mode, on `device`
    data: ImageData | FolderImages  # the dataset the run trained on (its subsets too): take(split, indices)
    mean: torch.Tensor  # (1, C, 1, 1) on `device`
    std: torch.Tensor
    state: dict  # the checkpoint's whole state (epoch, config, history, ...)
    task: str  # "supervised" | "rotation"
    head_classes: list[str]  # what the head predicts: classes, or rotations
    augment: Augment  # the run's data pipeline; .eval is what the network saw in evaluation

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def prepare(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 images (on the device) -> the network's input, as in the run's evaluation."""
        return self.augment.eval(x_uint8)


def load_model_and_data(folder: Path, device="cpu", data=None) -> Loaded:
    """The checkpoint's network (eval mode) and data; `data` skips reloading a dataset the
    caller already holds."""
    state = load_checkpoint(Path(folder))
    model = ResNet(**state["arch"])
    model.load_state_dict(state["model"], strict=True)
    model.eval().to(device)
    cfg = DataConfig(**state["config"]["data"])
    recorded = state.get("data") or {}  # checkpoints before data.stream lack it
    if data is None:
        data = folder_images(cfg) if recorded.get("streamed") else load_dataset(cfg)
    mean, std = norm_stats(recorded, data, device)
    return Loaded(model=model, data=data, mean=mean, std=std, state=state,
                  task=state.get("task", "supervised"), head_classes=list(state.get("classes") or data.classes),
                  augment=Augment(cfg, mean, std))


def norm_stats(recorded: dict, data, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's (1, C, 1, 1) mean and std: as its checkpoint recorded them, else measured on `data`."""
    if "mean" not in recorded:
        return data.norm_stats(device)
    return (torch.tensor(recorded["mean"], device=device).view(1, -1, 1, 1),
            torch.tensor(recorded["std"], device=device).view(1, -1, 1, 1))
