"""Learned kernels: the first layer's filters, and a deeper conv's kernels per input channel."""
from __future__ import annotations

import numpy as np

from convlens.analysis import plots
from convlens.analysis.registry import register


def deeper_conv(model) -> str:
    """First conv of the last stage: kernels over many input channels."""
    return f"{model.stage_names[-1]}.0.conv1"


def compute(ctx) -> dict:
    first = ctx.model.conv1.weight.detach().float().cpu().numpy()  # (O, I, k, k)
    name = deeper_conv(ctx.model)
    deep = dict(ctx.model.named_modules())[name].weight.detach().float().cpu().numpy()
    return {"first": first, "deep": deep[:16, :16], "deep_name": name,
            "first_norm": float(np.linalg.norm(first)), "deep_norm": float(np.linalg.norm(deep))}


def draw(r: dict, ctx) -> list[plots.Panel]:
    first = r["first"]
    if first.shape[1] == 3:  # RGB kernels shown in colour
        tiles = plots.unit(first.transpose(0, 2, 3, 1), axes=(1, 2, 3))
    else:
        tiles = plots.unit(first[:, 0], axes=(1, 2))
    ncols = int(np.ceil(np.sqrt(len(tiles))))
    fig1 = plots.mosaic_figure([(f"conv1: {len(first)} kernels {first.shape[2]}x{first.shape[3]}"
                                 f" (each scaled to its own range)", plots.mosaic(tiles, ncols))],
                               f"{ctx.title}  first-layer filters")
    deep = r["deep"]  # (O, I, k, k): one row per output channel, one column per input channel
    o, i, k, _ = deep.shape
    tiles = plots.unit(deep.reshape(o * i, k, k), axes=(1, 2))
    fig2 = plots.mosaic_figure([(f"{r['deep_name']}: rows = {o} output channels, "
                                 f"columns = {i} input channels", plots.mosaic(tiles, i))],
                               f"{ctx.title}  deeper kernels per input channel")
    return [plots.Panel("conv1", fig1, "first-layer kernels, each normalized to its own range"),
            plots.Panel("deep", fig2, f"{r['deep_name']} kernels: output x input channel")]


register("filters", draw, title="Learned filters",
         explanation="The learned convolution kernels of the first layer drawn as small images: on natural "
                     "images they become edge, colour and frequency detectors. Below them, a deeper layer's "
                     "kernels, one row per output channel and one column per input channel.",
         caption="learned convolution kernels")(compute)
