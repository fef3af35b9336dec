"""Evaluation of a model on a (sharded) split: loss, accuracy and per-class accuracy."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from convlens.training import tasks
from convlens.training.dist import all_reduce_


def evaluate(model, images, labels, task: str, num_out: int, prepare, batch_size: int,
             device, amp: bool = False, channels_last: bool = False) -> dict:
    """evaluate_batches over a split held in memory: images (N, C, H, W) uint8 on any device,
    labels (N,) int64, in batches of batch_size."""
    batches = ((images[s:s + batch_size], labels[s:s + batch_size]) for s in range(0, len(labels), batch_size))
    return evaluate_batches(model, batches, task, num_out, prepare, device, amp, channels_last)


@torch.no_grad()
def evaluate_batches(model, batches, task: str, num_out: int, prepare, device, amp: bool = False,
                     channels_last: bool = False) -> dict:
    """Sum of loss, correct and per-class counts over this shard, all-reduced across workers.

    batches: (uint8 images, int64 labels) pairs on any device; prepare: uint8 batch on the
    device -> the model's input (Augment.eval: resize and normalize).
    Returns {"loss", "accuracy", "per_class_accuracy" (list), "count"}.
    """
    model.eval()
    sums = torch.zeros(2, device=device, dtype=torch.float64)  # loss sum, count
    confusion = torch.zeros(num_out * num_out, device=device, dtype=torch.float64)
    for images, labels in batches:
        x = prepare(images.to(device, non_blocking=True))
        y = labels.to(device, non_blocking=True)
        x, y = tasks.prepare(task, x, y)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        sums[0] += F.cross_entropy(logits.float(), y, reduction="sum").double()
        sums[1] += len(y)
        confusion += torch.bincount(y * num_out + logits.argmax(1), minlength=num_out ** 2).double()
    all_reduce_(sums)
    all_reduce_(confusion)
    return summarize(sums, confusion.view(num_out, num_out))


def summarize(sums: torch.Tensor, confusion: torch.Tensor) -> dict:
    count = max(float(sums[1]), 1.0)
    per_class_total = confusion.sum(1).clamp(min=1)
    return {"loss": float(sums[0]) / count,
            "accuracy": float(confusion.diag().sum()) / count,
            "per_class_accuracy": (confusion.diag() / per_class_total).tolist(),
            "confusion": confusion.long().tolist(),
            "count": int(sums[1])}
