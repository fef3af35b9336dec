"""How faithful each saliency map is: deletion and insertion curves (analysis/perturb.py) of
CAM, Grad-CAM, guided backprop and guided Grad-CAM, next to two baselines scored the same way,
a random map and the plain input gradient. The target is what the head predicts (a class, or a
rotation for the rotation network), the same target the maps explain."""
from __future__ import annotations

import numpy as np
import torch

from convlens.analysis import cam, perturb, plots
from convlens.analysis.registry import register

SALIENCY = ("cam", "gradcam", "guided_backprop", "guided_gradcam")
BASELINES = ("input_gradient", "random")
MAPS = SALIENCY + BASELINES


def all_maps(model, x: torch.Tensor, layer: str, last_stage: str, seed: int) -> tuple[dict, torch.Tensor]:
    """name -> maps of a batch for every method and baseline, all for the predicted target."""
    maps, out = {}, {"target": None}
    for kind in SALIENCY + ("input_gradient",):
        maps[kind], out = cam.saliency(model, x, kind, layer, last_stage, out["target"])
    g = torch.Generator().manual_seed(seed)
    maps["random"] = torch.rand((len(x), *x.shape[-2:]), generator=g).to(x.device)
    return maps, out["target"]


def score_maps(ctx, maps_of) -> dict[str, torch.Tensor]:
    """Curves "<mode>/<name>" (N, steps + 1) over the head batch, chunk by chunk;
    maps_of(x) -> ({name: maps}, target)."""
    x_u8, _, _ = ctx.head_batch()
    parts: dict[str, list] = {}
    with cam.frozen_eval(ctx.model):
        for i in range(0, len(x_u8), ctx.opts.batch_size):
            x = ctx.norm(x_u8[i:i + ctx.opts.batch_size])
            maps, target = maps_of(x)
            got = perturb.curves(perturb.target_probability(ctx.model, target), x, maps,
                                 ctx.opts.faithfulness_steps, ctx.opts.faithfulness_fill, ctx.opts.seed + i)
            for k, v in got.items():
                parts.setdefault(k, []).append(v.cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


def summarize(curves: dict[str, torch.Tensor], steps: int) -> dict:
    """Mean curves "<mode>_<name>" and mean areas "<mode>_auc_<name>", as the JSON keeps them."""
    out = {"fractions": np.linspace(0, 1, steps + 1)}
    for key, c in curves.items():
        mode, name = key.split("/")
        out[f"{mode}_{name}"] = c.mean(0).numpy()
        out[f"{mode}_auc_{name}"] = float(perturb.auc(c).mean())
    return out


def compute(ctx) -> dict:
    last = ctx.model.stage_names[-1]
    curves = score_maps(ctx, lambda x: all_maps(ctx.model, x, ctx.stage, last, ctx.opts.seed))
    result = summarize(curves, ctx.opts.faithfulness_steps)
    ranked = sorted(SALIENCY, key=lambda m: result[f"deletion_auc_{m}"] - result[f"insertion_auc_{m}"])
    return {**result, "methods": list(MAPS), "layer": ctx.stage, "fill": ctx.opts.faithfulness_fill,
            "most_faithful": ranked[0], "images": len(next(iter(curves.values())))}


def draw(r: dict, ctx) -> list[plots.Panel]:
    panels = [(f"{mode}: {'lower' if mode == 'deletion' else 'higher'} area is more faithful", r["fractions"],
               {f"{m} ({r[f'{mode}_auc_{m}']:.3f})": r[f"{mode}_{m}"] for m in r["methods"]})
              for mode in ("deletion", "insertion")]
    fig = plots.lines(panels, f"{ctx.title}  faithfulness, Grad-CAM at {r['layer']}, fill {r['fill']}, "
                              f"{r['images']} images", "fraction of pixels removed / revealed",
                      "target probability")
    return [plots.Panel("", fig, f"deletion and insertion curves (area in the legend) of every saliency "
                                 f"method and two baselines; most faithful: {r['most_faithful']}")]


register("faithfulness", draw, title="Faithfulness of the saliency maps",
         explanation="Deletion and insertion (Petsiuk et al. 2018): pixels are removed from the image (or revealed "
                     "on an empty one) in the order a map ranks them, and the probability of the predicted class is "
                     "followed. A faithful map makes it fall fast on deletion (small area) and rise fast on insertion "
                     "(large area). A random map and the plain input gradient, scored the same way, are the bars "
                     "to clear. Removed pixels take the dataset mean, or with faithfulness_fill: road a noisy linear "
                     "imputation from their neighbours (Rong et al. 2022), which keeps the images closer to the data. "
                     "For the rotation network the target is the predicted rotation of the rotated test images.",
         caption="deletion / insertion curves and areas per saliency method",
         table=tuple(f"{mode}_auc_{m}" for mode in ("deletion", "insertion") for m in MAPS))(compute)
