"""Finding a NaN or Inf loss on any worker without making the GPU wait."""
from __future__ import annotations

import torch

from convlens.training.dist import all_reduce_

NO_STEP = 2 ** 62
CHECK_EVERY = 25  # steps between checks


class NonFiniteWatch:
    """The first global step whose loss was NaN or Inf on any rank, found without stalling the GPU.

    A check all-reduces the step on the device and copies it to pinned host memory without
    waiting; the result is read at the next check, when that copy is long done, or at once
    when `final`. Every rank reads the same results at the same steps, so all stop together.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.first_bad = torch.full((1,), NO_STEP, device=device, dtype=torch.int64)
        self.pending = None  # (host tensor, cuda event) of the last check

    def note(self, loss: torch.Tensor, global_step: int) -> None:
        bad = ~torch.isfinite(loss.detach()) & (self.first_bad == NO_STEP)
        self.first_bad = torch.where(bad, torch.full_like(self.first_bad, global_step), self.first_bad)

    def check(self, final: bool) -> int | None:
        previous = self.pending
        reduced = all_reduce_(self.first_bad.clone(), op=torch.distributed.ReduceOp.MIN)
        host = torch.empty(1, dtype=torch.int64, pin_memory=self.cuda)
        host.copy_(reduced, non_blocking=True)
        event = torch.cuda.Event() if self.cuda else None
        if event is not None:
            event.record()
        self.pending = (host, event)
        ready = self.pending if final else previous
        if ready is None:
            return None
        host, event = ready
        if event is not None:
            event.synchronize()
        return None if int(host) == NO_STEP else int(host)


def due(step: int, steps: int) -> bool:
    """Whether a check runs after this (0-based) step: every CHECK_EVERY steps and at the last."""
    return (step + 1) % CHECK_EVERY == 0 or step + 1 == steps


def nonfinite_stop(epoch: int, global_step: int, steps: int) -> dict:
    step_in_epoch = global_step - (epoch - 1) * steps
    return {"stop_reason": f"non-finite loss at epoch {epoch}, step {step_in_epoch} "
                           f"(global step {global_step}); lower optim.lr or check the data",
            "epoch": epoch, "step": step_in_epoch}
