"""Optimizer and learning-rate schedule from the config."""
from __future__ import annotations

import torch


def build_optimizer(params, cfg, fused: bool = False) -> torch.optim.Optimizer:
    extra = {"fused": True} if fused else {}
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay, **extra)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)


def build_scheduler(opt, cfg, lr: float, epochs: int, steps_per_epoch: int):
    """Returns (scheduler, per_step): per_step schedulers step every batch, the others every epoch."""
    if cfg.name == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(opt, cfg.milestones, cfg.gamma), False
    if cfg.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs), False
    if cfg.name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs,
                                                   steps_per_epoch=steps_per_epoch), True
    return torch.optim.lr_scheduler.MultiStepLR(opt, [], 1.0), False  # constant


def retarget(opt: torch.optim.Optimizer, sched, saved: dict, cfg) -> None:
    """After loading an optimizer and schedule saved under other values (saved: that run's optim
    section; PBT's donor), continue with cfg's: every learning rate scaled by cfg.lr / saved lr
    (so the schedule keeps its place), and momentum and weight decay set to cfg's."""
    factor = cfg.lr / saved["lr"]
    for group in opt.param_groups:
        for key in ("lr", "initial_lr", "max_lr", "min_lr"):  # min_lr, max_lr: OneCycleLR's
            if key in group:
                group[key] *= factor
        if "momentum" in group and not isinstance(opt, (torch.optim.Adam, torch.optim.AdamW)):
            group["momentum"] = cfg.momentum
        group["weight_decay"] = cfg.weight_decay
    if hasattr(sched, "base_lrs"):
        sched.base_lrs = [lr * factor for lr in sched.base_lrs]
    if hasattr(sched, "_last_lr"):
        sched._last_lr = [group["lr"] for group in opt.param_groups]
