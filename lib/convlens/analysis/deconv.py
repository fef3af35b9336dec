"""Deconvnet (Zeiler & Fergus 2014): project activations back to pixel space.

Going down, each layer is undone by its transpose with the same weights: max-pooling by
unpooling to the recorded switch positions, ReLU by rectifying the signal, a conv (with
batch norm's per-channel scale folded in) by the transposed conv. At a residual block the
signal can follow the residual path, the shortcut, or both (their sum).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convlens.analysis import base, plots
from convlens.analysis.registry import register

MODES = ("residual", "shortcut", "both")


# ------------------------------------------------------------ pure operations

def unpool(r: torch.Tensor, switches: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Put each pooled value back at its max's position (B, C, h, w) -> (B, C, *size);
    overlapping windows that chose the same position add up."""
    b, c = r.shape[:2]
    out = r.new_zeros(b, c, size[0] * size[1])
    return out.scatter_add_(2, switches.flatten(2), r.flatten(2)).view(b, c, *size)


def conv_t(r: torch.Tensor, weight: torch.Tensor, stride, padding, in_shape) -> torch.Tensor:
    """Transposed conv with the forward conv's weight, output sized like the conv's input."""
    return torch.nn.grad.conv2d_input(list(in_shape), weight, r, stride=stride, padding=padding)


def deconv_layer(r, weight, stride, padding, in_shape, switches=None, pooled_from=None):
    """Undo conv -> ReLU -> [max-pool]: unpool (if pooled), rectify, transposed conv."""
    if switches is not None:
        r = unpool(r, switches, pooled_from)
    return conv_t(F.relu(r), weight, stride, padding, in_shape)


def folded(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> torch.Tensor:
    """Conv weight times batch norm's per-channel scale (the linear part of conv + BN)."""
    w = conv.weight.detach()
    if bn is None:
        return w
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return w * scale.view(-1, 1, 1, 1)


# ------------------------------------------------------------ through a ResNet

def record(model, x: torch.Tensor, upto: int) -> tuple[torch.Tensor, dict]:
    """Forward to stage `upto`, keeping every conv's input shape and the stem's pool switches."""
    shapes = {}
    handles = [m.register_forward_pre_hook(lambda m, inp: shapes.__setitem__(m, inp[0].shape))
               for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            a = model.relu(model.bn1(model.conv1(x)))
            rec = {"shapes": shapes, "stem_out": a.shape}
            pool = model.maxpool
            if isinstance(pool, nn.MaxPool2d):
                a, rec["switches"] = F.max_pool2d(a, pool.kernel_size, pool.stride, pool.padding,
                                                  return_indices=True)
            for stage in model.stages()[:upto]:
                a = stage(a)
    finally:
        for h in handles:
            h.remove()
    return a, rec


def block_convs(block) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    names = ["1", "2", "3"] if hasattr(block, "conv3") else ["1", "2"]
    return [(getattr(block, "conv" + n), getattr(block, "bn" + n)) for n in names]


def deconv_block(block, r: torch.Tensor, shapes: dict, mode: str) -> torch.Tensor:
    r = F.relu(r)  # the block's output ReLU
    res = r
    convs = block_convs(block)
    for i, (conv, bn) in enumerate(reversed(convs)):
        if i > 0:
            res = F.relu(res)
        res = conv_t(res, folded(conv, bn), conv.stride, conv.padding, shapes[conv])
    if block.downsample is None:
        short = r
    else:
        conv, bn = block.downsample[0], block.downsample[1]
        short = conv_t(r, folded(conv, bn), conv.stride, conv.padding, shapes[conv])
    return {"residual": res, "shortcut": short, "both": res + short}[mode]


@torch.no_grad()
def project(model, rec: dict, r: torch.Tensor, upto: int, mode: str) -> torch.Tensor:
    """Signal at stage `upto`'s output (B, C, h, w) -> pixel-space reconstruction (B, in, H, W)."""
    for stage in reversed(model.stages()[:upto]):
        for block in reversed(list(stage)):
            r = deconv_block(block, r, rec["shapes"], mode)
    conv = model.conv1
    return deconv_layer(r, folded(conv, model.bn1), conv.stride, conv.padding, rec["shapes"][conv],
                        rec.get("switches"), tuple(rec["stem_out"][-2:]))


def only_channel(a: torch.Tensor, c: int) -> torch.Tensor:
    out = torch.zeros_like(a)
    out[:, c] = a[:, c]
    return out


# ------------------------------------------------------------ the method

def compute(ctx) -> dict:
    model, stage = ctx.model, ctx.stage
    upto = model.stage_names.index(stage) + 1
    x = ctx.norm(ctx.images)
    acts, _ = record(model, x, upto)  # (N, C, h, w)
    c = ctx.opts.channel if ctx.opts.channel is not None else int(acts.mean((0, 2, 3)).argmax())
    one, rec1 = record(model, x[:1], upto)
    recon = {}
    for mode in MODES:
        recon[f"channel_{mode}"] = project(model, rec1, only_channel(one, c), upto, mode)[0]
        recon[f"stage_{mode}"] = project(model, rec1, one, upto, mode)[0]
    top = acts[:, c].amax((1, 2)).argsort(descending=True)[:ctx.opts.topk]
    a_top, rec_top = record(model, x[top], upto)
    top_recon = project(model, rec_top, only_channel(a_top, c), upto, "both")
    return {"image": base.display(ctx.images[:1])[0], "stage": stage, "channel": c,
            "recon": {k: v.cpu().numpy() for k, v in recon.items()},
            "top_images": base.display(ctx.images[top.cpu()]), "top_recon": top_recon.cpu().numpy(),
            "top_activation": acts[top, c].amax((1, 2)).cpu().numpy()}


def as_image(r: np.ndarray) -> np.ndarray:
    """(C, H, W) reconstruction -> displayable [0, 1], centred so zero is mid-grey."""
    img = plots.signed_unit(r)
    return img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)


def draw(r: dict, ctx) -> list[plots.Panel]:
    rows = [[r["image"]] + [as_image(r["recon"][f"{what}_{m}"]) for m in MODES]
            for what in ("channel", "stage")]
    labels = [f"{r['stage']} ch {r['channel']}", f"all of {r['stage']}"]
    fig1 = plots.image_table(rows, row_labels=labels, col_labels=["input"] + [f"via {m}" for m in MODES],
                             suptitle=f"{ctx.title}  deconvnet projection", size=1.8)
    k = len(r["top_images"])
    cells = [list(r["top_images"]), [as_image(t) for t in r["top_recon"]]]
    titles = [[f"max {v:.2f}" for v in r["top_activation"]], [""] * k]
    fig2 = plots.image_table(cells, titles, row_labels=["image", "deconv"],
                             suptitle=f"{ctx.title}  top-{k} images for {r['stage']} channel {r['channel']}")
    return [plots.Panel("", fig1, f"{r['stage']} channel {r['channel']} and whole stage projected to "
                                  f"pixels via residual path, shortcut, both"),
            plots.Panel("topk", fig2, f"test images most activating {r['stage']} channel "
                                      f"{r['channel']} beside their deconv reconstructions")]


register("deconv", draw, title="Deconvnet projections",
         explanation="Zeiler & Fergus: the strongest activation of a unit is projected back to pixels through "
                     "transposed convolutions and ReLUs, showing the pattern it responds to. At a residual block "
                     "the signal can follow the residual path, the shortcut, or both.",
         caption="deconvnet projections to pixel space")(compute)
