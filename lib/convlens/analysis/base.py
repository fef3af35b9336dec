"""What every method starts from: a model in eval mode, a batch of normalized test images,
hooks that capture named layers' own outputs (safe from in-place ReLUs), and batched feature passes.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from convlens.data.augment import Augment, normalize
from convlens.specs.analyze import AnalyzeOptions
from convlens.storage.restore import load_model_and_data
from convlens.training import tasks


@dataclass
class Context:
    model: nn.Module  # convlens ResNet, eval mode, on `device`
    task: str  # "supervised" | "rotation"
    classes: list[str]  # dataset class names (true labels)
    head_classes: list[str]  # what the head predicts (classes or rotations)
    images: torch.Tensor  # (N, C, H, W) uint8 test images
    labels: torch.Tensor  # (N,) int64 true classes
    mean: torch.Tensor  # (1, C, 1, 1)
    std: torch.Tensor
    opts: AnalyzeOptions
    device: torch.device = torch.device("cpu")
    train_images: torch.Tensor | None = None  # (M, C, H, W) uint8, for kNN
    train_labels: torch.Tensor | None = None
    title: str = ""  # "run / epoch N", for figure titles
    cache: dict = field(default_factory=dict)
    augment: Augment | None = None  # the run's evaluation view (resize); None: normalize only

    def norm(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 images -> the network's input on the device, as the run evaluated them."""
        if self.augment is not None:
            return self.augment.eval(x_uint8.to(self.device))
        return normalize(x_uint8.to(self.device), self.mean.to(self.device), self.std.to(self.device))

    def head_batch(self) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """(uint8 images, head targets, target names) the head is judged on: test images with
        their classes, or for a rotation network, rotated test images with the rotation."""
        if self.task == "rotation":
            n = max(1, len(self.images) // 4)  # four rotations each: same batch size overall
            x, y = tasks.rotate_batch(self.images[:n])
            return x, y, self.head_classes
        return self.images, self.labels, self.head_classes

    @property
    def stage(self) -> str:
        return self.opts.layer or self.model.stage_names[-1]


def display(x_uint8: torch.Tensor) -> np.ndarray:
    """uint8 (N, C, H, W) -> float (N, H, W) for 1 channel or (N, H, W, 3) in [0, 1]."""
    x = x_uint8.float().div(255).cpu().numpy()
    return x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)


def module(model: nn.Module, name: str) -> nn.Module:
    """A named sub-module ('layer2', 'layer1.0.conv1'); unknown names list what exists."""
    found = dict(model.named_modules())
    if name not in found:
        stages = getattr(model, "stage_names", [])
        raise ValueError(f"layer {name!r} not in the model; stages are {stages}, e.g. "
                         f"{[n for n in found if n][:8]}")
    return found[name]


@contextmanager
def capture(model: nn.Module, names: list[str], leaf: bool = False):
    """Record the forward outputs of named modules: yields dict name -> {"act": tensor}.

    The recorded tensor is the module's own output: what flows on is a copy, so an in-place op
    after it (the ReLU(inplace=True) after a batch norm) cannot overwrite it. leaf=True detaches
    it into a leaf that requires grad, so `torch.autograd.grad(score, act)` needs no graph (and
    no saved tensors) before the layer.
    """
    store = {n: {} for n in names}
    handles = []
    for n in names:
        def hook(mod, inp, out, n=n):
            if leaf:
                out = out.detach().requires_grad_(True)
            store[n]["act"] = out
            return out.clone()
        handles.append(module(model, n).register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def features(ctx: Context, x_uint8: torch.Tensor, pre_logits: bool = True) -> np.ndarray:
    """Penultimate features (N, D) (or logits), in batches."""
    out = []
    for i in range(0, len(x_uint8), ctx.opts.batch_size):
        x = ctx.norm(x_uint8[i:i + ctx.opts.batch_size])
        out.append(ctx.model.forward_head(ctx.model.forward_features(x), pre_logits=pre_logits).float().cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def activations(ctx: Context, x_uint8: torch.Tensor, names: list[str]) -> dict[str, np.ndarray]:
    """Named layers' outputs for a (small) batch, as numpy arrays."""
    with capture(ctx.model, names) as store:
        ctx.model(ctx.norm(x_uint8))
    return {n: store[n]["act"].float().cpu().numpy() for n in names}


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def build_context(folder: Path, opts: AnalyzeOptions, device: str = "cpu", title: str = "") -> Context:
    """Model and test images for one checkpoint, rebuilt from what the checkpoint recorded; only
    the chosen images are read (a streamed run's folder is decoded file by file)."""
    loaded = load_model_and_data(folder, device)  # verified load, strict, same architecture
    data = loaded.data
    g = seeded(opts.seed)
    test = torch.randperm(len(data.labels("test")), generator=g)[:opts.num_images].sort().values
    train = torch.randperm(len(data.labels("train")), generator=g)[:opts.num_train].sort().values
    images, labels = data.take("test", test)
    train_images, train_labels = data.take("train", train)
    return Context(model=loaded.model.to(device), task=loaded.task, classes=list(data.classes),
                   head_classes=loaded.head_classes, images=images, labels=labels,
                   mean=loaded.mean, std=loaded.std, opts=opts, device=torch.device(device),
                   train_images=train_images, train_labels=train_labels, title=title,
                   augment=loaded.augment)
