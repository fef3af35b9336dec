"""Activations of one test image after the first and the last stage."""
from __future__ import annotations

import numpy as np

from convlens.analysis import base, plots
from convlens.analysis.registry import register


def compute(ctx) -> dict:
    first, last = ctx.model.stage_names[0], ctx.model.stage_names[-1]
    acts = base.activations(ctx, ctx.images[:1], [first, last])
    return {"image": base.display(ctx.images[:1])[0], "label": int(ctx.labels[0]),
            "first": acts[first][0, :32], "last": acts[last][0, :32], "names": [first, last],
            "first_mean": float(acts[first].mean()), "last_mean": float(acts[last].mean())}


def draw(r: dict, ctx) -> list[plots.Panel]:
    parts = [(f"input ({ctx.classes[r['label']]})", r["image"])]
    for key, name in zip(("first", "last"), r["names"]):
        a = r[key]  # (C, h, w)
        tiles = plots.unit(a, axes=(1, 2))
        parts.append((f"{name}: {len(a)} channels {a.shape[1]}x{a.shape[2]}",
                      plots.mosaic(tiles, int(np.ceil(np.sqrt(len(a)))))))
    fig = plots.mosaic_figure(parts, f"{ctx.title}  feature maps", cmap="viridis")
    return [plots.Panel("", fig, f"activations of one image after {r['names'][0]} and {r['names'][-1]}")]


register("feature_maps", draw, title="Feature maps",
         explanation="Activations of the first channels for one input after the first and the last stage: "
                     "early maps keep the image layout, later ones respond to larger, more abstract parts.",
         caption="first and last stage activations")(compute)
