"""Every registered method, computed and drawn on a random tiny network (no Ray, no checkpoint)."""
from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
import torch

from convlens.analysis import base, runner
from convlens.analysis.registry import load_all
from convlens.models.resnet import ResNet
from convlens.specs.analyze import AnalyzeOptions


def context(task: str) -> base.Context:
    torch.manual_seed(0)
    heads = ["0", "90", "180", "270"] if task == "rotation" else [f"c{i}" for i in range(5)]
    model = ResNet([1, 1], width=8, stem="imagenet", in_chans=1, num_classes=len(heads)).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.arange(40) % 5
    opts = AnalyzeOptions(num_images=40, num_train=60, inversion_steps=3, tsne_points=30, topk=3,
                          faithfulness_steps=4)
    return base.Context(model=model, task=task, classes=[f"c{i}" for i in range(5)], head_classes=heads,
                        images=images, labels=labels, mean=torch.full((1, 1, 1, 1), 0.5),
                        std=torch.full((1, 1, 1, 1), 0.25), opts=opts,
                        train_images=torch.randint(0, 256, (60, 1, 28, 28), generator=g, dtype=torch.uint8),
                        train_labels=torch.arange(60) % 5, title=f"random {task}")


@pytest.mark.parametrize("name", sorted(load_all()))
def test_method_writes_a_real_png(name, tmp_path):
    for task in ("supervised", "rotation"):
        entries = runner.run_method(context(task), name, tmp_path / task, {"run": "r", "epoch": 0})
        pngs = [e["file"] for e in entries if e["file"].endswith(".png")]
        assert pngs and any(e["file"].endswith(".json") for e in entries)
        for path in pngs:
            img = matplotlib.image.imread(path)
            assert img.shape[0] > 100 and img.shape[1] > 100
            assert np.ptp(img[..., :3]) > 0.1, f"{path} is one colour"
