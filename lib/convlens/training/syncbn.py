"""Batch norm over the global batch of all DDP workers, for CPU (gloo).

torch's SyncBatchNorm only runs on CUDA; this one all-reduces the per-channel sums with
differentiable collectives, so N workers normalize exactly as one worker holding the whole
batch would. Same parameters and buffers as nn.BatchNorm2d.

A run with model.sync_bn uses it on one worker too: torch's own CPU kernel for channels_last
input computes the batch statistics in float32 with an error about 30x larger (1.8e-5 vs
5e-7 on an AVX2 machine), which training amplifies until one worker no longer matches two.
Here the sums are accumulated in float64, so any number of workers computes the same
statistics up to the last bit of float32.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class AllReduceSum(torch.autograd.Function):
    """all_reduce(SUM) with its gradient: every worker's output is the sum of all inputs, so each
    input's gradient is the sum of all outputs' gradients. (torch.distributed.nn.functional's
    all_reduce did this; torch 2.14 deprecates it with a warning in every worker's log.)"""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def global_sum(t: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over every worker (the identity on one worker)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        return AllReduceSum.apply(t)
    return t


class GlobalBatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        n = global_sum(torch.tensor([x.numel() / x.shape[1]], device=x.device, dtype=torch.float64))
        mean = global_sum(x.sum((0, 2, 3), dtype=torch.float64)) / n  # (C,)
        centred = x - mean.to(x.dtype)[None, :, None, None]
        var = global_sum(centred.pow(2).sum((0, 2, 3), dtype=torch.float64)) / n  # biased, as BN normalizes
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)  # None: cumulative
            self.running_mean.mul_(1 - m).add_(mean.detach().to(x.dtype), alpha=m)
            self.running_var.mul_(1 - m).add_((var.detach() * n / (n - 1)).to(x.dtype), alpha=m)
        y = centred * torch.rsqrt(var + self.eps).to(x.dtype)[None, :, None, None]
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
