"""The two kinds of supervision: class labels, and rotation prediction (Gidaris et al. 2018).

A task turns an augmented batch and its labels into (inputs, targets) and says how many
outputs the head needs. Both share the same ResNet; only the head size and this differ.
"""
from __future__ import annotations

import torch

ROTATIONS = ["0", "90", "180", "270"]


def rotate_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) -> all four rotations (4B, C, H, W), labels k for a rotation of k*90 degrees."""
    rotated = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
    labels = torch.arange(4, device=x.device).repeat_interleave(len(x))
    return rotated, labels


def num_outputs(task: str, num_classes: int) -> int:
    return 4 if task == "rotation" else num_classes


def class_names(task: str, classes: list[str]) -> list[str]:
    return ROTATIONS if task == "rotation" else list(classes)


def prepare(task: str, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets for one step; the rotation task never reads the class labels."""
    if task == "rotation":
        return rotate_batch(x)
    return x, y
