"""Feature inversion (Mahendran & Vedaldi 2015): from noise, find an input whose features at a
stage match a target image's, under MSE plus a small total-variation prior."""
from __future__ import annotations

import torch

from convlens.analysis import base, plots
from convlens.analysis.registry import register


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels, per image summed over the batch."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean((1, 2, 3))
    dw = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean((1, 2, 3))
    return (dh + dw).sum()


def invert(model, target: torch.Tensor, upto: int, steps: int, tv_weight: float, seed: int,
           lr: float = 0.1) -> tuple[torch.Tensor, list[float]]:
    """Normalized inputs (B, C, H, W) whose stage-`upto` features match those of `target`."""
    with torch.no_grad():
        goal = model.forward_features(target, upto)
    scale = goal.pow(2).mean((1, 2, 3)).clamp_min(1e-8)  # relative error per image
    g = torch.Generator().manual_seed(seed)
    x = (0.1 * torch.randn(target.shape, generator=g)).to(target.device).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        feats = model.forward_features(x, upto)
        match = ((feats - goal).pow(2).mean((1, 2, 3)) / scale).sum()
        loss = match + tv_weight * total_variation(x)
        loss.backward()
        opt.step()
        losses.append(match.item() / len(x))
    return x.detach(), losses


def compute(ctx) -> dict:
    for p in ctx.model.parameters():
        p.requires_grad_(False)
    target = ctx.norm(ctx.images[:4])
    out = {"images": base.display(ctx.images[:4]), "stages": list(ctx.model.stage_names)}
    for i, stage in enumerate(ctx.model.stage_names):
        x, losses = invert(ctx.model, target, i + 1, ctx.opts.inversion_steps, ctx.opts.tv_weight,
                           ctx.opts.seed)
        out[f"inverted_{stage}"] = x.cpu().numpy()
        out[f"loss_{stage}"] = losses[-1]
        out[f"loss_first_{stage}"] = losses[0]
    return out


def draw(r: dict, ctx) -> list[plots.Panel]:
    rows = [list(r["images"])]
    for stage in r["stages"]:
        inv = plots.unit(r[f"inverted_{stage}"], axes=(1, 2, 3))
        rows.append([t[0] if t.shape[0] == 1 else t.transpose(1, 2, 0) for t in inv])
    labels = ["target"] + [f"from {s}\nerr {r[f'loss_{s}']:.3f}" for s in r["stages"]]
    fig = plots.image_table(rows, row_labels=labels, suptitle=f"{ctx.title}  feature inversion "
                            f"({len(r['stages'])} stages, MSE + TV)", size=1.5)
    return [plots.Panel("", fig, "inputs reconstructed from noise to match each stage's features")]


register("inversion", draw, title="Feature inversion",
         explanation="Mahendran & Vedaldi: an image optimised from noise so that its features match those of a "
                     "real image (with a smoothness prior) shows what the layer keeps.",
         caption="feature inversion from noise")(compute)
