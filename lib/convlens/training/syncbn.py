"""Batch norm over the global batch of all DDP workers, for CPU (gloo).

torch's SyncBatchNorm only runs on CUDA; this one all-reduces the per-channel mean and then
the squared deviations with differentiable collectives, so N workers normalize exactly as one
worker holding the whole batch would. Same parameters and buffers as nn.BatchNorm2d.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn


class GlobalBatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(x)
        local_n = torch.tensor([x.numel() / x.shape[1]], device=x.device, dtype=x.dtype)
        n = dist_fn.all_reduce(local_n)
        mean = dist_fn.all_reduce(x.sum((0, 2, 3))) / n  # (C,)
        centred = x - mean[None, :, None, None]
        var = dist_fn.all_reduce(centred.pow(2).sum((0, 2, 3))) / n  # biased, as BatchNorm normalizes
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        y = centred / torch.sqrt(var + self.eps)[None, :, None, None]
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None]


def convert_to_global_bn(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in place, keeping its parameters and running statistics."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            convert_to_global_bn(child)
    return module
