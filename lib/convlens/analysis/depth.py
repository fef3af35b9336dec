"""Grad-CAM across depth: the same images' Grad-CAM at every stage side by side, each stage
with its deletion / insertion area (analysis/perturb.py) beside it, so a user sees where in
the network the evidence is localized and which stage's map is faithful."""
from __future__ import annotations

import numpy as np
import torch

from convlens.analysis import base, cam, faithfulness, plots
from convlens.analysis.registry import register

SHOWN = 8  # images drawn; the areas use the whole head batch
MAX_STAGES = 4  # table columns for ResNets of up to four stages


def stage_maps(model, x: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """stage -> Grad-CAM maps (B, H, W) of the predicted target, plus a random map baseline."""
    maps, target = {}, None
    for stage in model.stage_names:
        maps[stage], out = cam.saliency(model, x, "gradcam", stage, model.stage_names[-1], target)
        target = out["target"]
    g = torch.Generator().manual_seed(0)
    maps["random"] = torch.rand((len(x), *x.shape[-2:]), generator=g).to(x.device)
    return maps, target


def compute(ctx) -> dict:
    stages = list(ctx.model.stage_names)
    x_u8, _, names = ctx.head_batch()
    shown = x_u8[:SHOWN]
    maps, target = stage_maps(ctx.model, ctx.norm(shown))
    result = faithfulness.summarize(faithfulness.score_maps(ctx, lambda x: stage_maps(ctx.model, x)),
                                    ctx.opts.faithfulness_steps)
    for i, stage in enumerate(stages, 1):  # stage-numbered copies: the W&B table's fixed columns
        for mode in ("deletion", "insertion"):
            result[f"{mode}_auc_stage{i}"] = result[f"{mode}_auc_{stage}"]
    return {**result, "stages": stages, "images": base.display(shown),
            "maps": np.stack([maps[s].cpu().numpy() for s in stages]),  # (S, n, H, W)
            "pred": [names[t] for t in target.tolist()], "fill": ctx.opts.faithfulness_fill}


def draw(r: dict, ctx) -> list[plots.Panel]:
    stages = r["stages"]
    heads = ["image"] + [f"{s}\ndel {r[f'deletion_auc_{s}']:.2f} ins {r[f'insertion_auc_{s}']:.2f}"
                         for s in stages]
    cells, overlay, titles = [], [], []
    for i, img in enumerate(r["images"]):
        cells.append([img] * (len(stages) + 1))
        overlay.append([None] + [r["maps"][k, i] for k in range(len(stages))])
        titles.append(heads if i == 0 else [r["pred"][i]] + [""] * len(stages))
    titles[0] = [f"{h}" for h in heads]
    fig = plots.image_table(cells, titles, overlay=overlay, size=1.6,
                            suptitle=f"{ctx.title}  Grad-CAM at every stage (areas over all images; random map: "
                                     f"del {r['deletion_auc_random']:.2f} ins {r['insertion_auc_random']:.2f})")
    return [plots.Panel("", fig, "Grad-CAM of the same images at every stage, with each stage's deletion / "
                                 "insertion area")]


register("gradcam_depth", draw, title="Grad-CAM across depth",
         explanation="The same test images' Grad-CAM at every stage, for the class (or rotation) the head predicts. "
                     "Early stages respond to texture and edges everywhere; the last stage to the object's "
                     "discriminative parts. The deletion / insertion areas above each column say how faithful "
                     "each stage's map is to the prediction; a random map's areas are in the title.",
         caption="Grad-CAM at every stage with its faithfulness",
         table=tuple(f"{mode}_auc_stage{i}" for mode in ("deletion", "insertion")
                     for i in range(1, MAX_STAGES + 1)))(compute)
