"""Precise batch-norm statistics before every validation (Wu & Johnson 2021, "Rethinking
'Batch' in BatchNorm", section 3).

During training a batch norm keeps exponential averages of the batch statistics over the last
~10 steps; while the weights still move fast those averages describe a network that no longer
exists, and validation judges the network worse than it is, by a different amount every epoch.
On the demo sweep's slim ResNet at epoch 2: 75.8% validation accuracy with the running averages,
84.2% after recomputing them with the epoch's final weights. So the statistics are recomputed
from a fixed set of training images (the evaluation view: what validation and the test feed
the network) before each validation, and the checkpoint keeps them. Training itself normalizes
with batch statistics and does not read them, so the training trajectory is unchanged.

torch.optim.swa_utils.update_bn does the same but resets every batch norm, frozen ones too.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from convlens.training.dist import all_reduce_, world_size


def recompute(model: torch.nn.Module, batches: Iterable[torch.Tensor], synced: bool) -> None:
    """Running statistics of the training batch norms (frozen ones are in eval mode and kept) as
    the plain average over `batches`; `model` in train mode, unwrapped (no DDP buffer broadcast).
    synced: the batch norms reduce over all workers themselves; otherwise the workers' averages
    are averaged, so every worker validates with the same statistics."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    momenta = {m: m.momentum for m in norms}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    with torch.no_grad():
        for x in batches:
            model(x)
    workers = 1 if synced else world_size()
    for m in norms:
        m.momentum = momenta[m]
        if workers > 1:
            for buf in (m.running_mean, m.running_var):
                all_reduce_(buf).div_(workers)
