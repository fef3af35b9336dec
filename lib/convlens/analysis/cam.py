"""Class activation maps, one shared forward/backward per batch; each method only says how
channels are weighted (CAM: the classifier's weights; Grad-CAM: mean gradients) or, for the
guided variants, how ReLU passes gradients back (Springenberg et al. 2015)."""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convlens.analysis import base, plots
from convlens.analysis.registry import register


# ------------------------------------------------------------ pure map arithmetic

def cam_weights(fc_weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CAM (Zhou et al. 2016): the linear head's row for each target class, (B, C)."""
    return fc_weight[target]


def gradcam_weights(grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): spatially averaged gradients, (B, C, h, w) -> (B, C)."""
    return grads.mean((2, 3))


def weighted_map(acts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """ReLU(sum_c w_c A_c): (B, C, h, w), (B, C) -> (B, h, w)."""
    return F.relu(torch.einsum("bchw,bc->bhw", acts, weights))


def upsample_unit(maps: torch.Tensor, size) -> torch.Tensor:
    """(B, h, w) -> (B, H, W) bilinear, each scaled to [0, 1] by its max (all-zero stays zero)."""
    up = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    peak = up.flatten(1).amax(1).clamp_min(1e-12)
    return up / peak[:, None, None]


class GuidedReLU(torch.autograd.Function):
    """ReLU forward; backward passes only positive gradients where the input was positive."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g.clamp(min=0) * (x > 0)


class _Guided(nn.Module):
    def forward(self, x):
        return GuidedReLU.apply(x)


@contextmanager
def guided_relus(model: nn.Module):
    """Swap every nn.ReLU sub-module for GuidedReLU, restoring them afterwards."""
    swapped = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                swapped.append((parent, name, child))
                setattr(parent, name, _Guided())
    try:
        yield model
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


# ------------------------------------------------------------ one pass per batch

@contextmanager
def frozen_eval(model: nn.Module):
    """Eval mode, and parameters that do not require grad, for the duration: gradients reach
    only the tensors asked for and nothing accumulates in any `.grad`. Afterwards every
    sub-module has its own mode back (a frozen stage's batch norms stay in eval mode)."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, training in modes:  # not model.train(flag): that sets every sub-module alike
            m.training = training


def forward_backward(model, x: torch.Tensor, layer: str, target: torch.Tensor | None = None,
                     guided: bool = False, input_grad: bool = False) -> dict:
    """Logits, the layer's activations and their gradient of each image's target logit
    (default: the predicted class), plus the input gradient when guided or input_grad.

    Without the input gradient the graph starts at the layer (nothing before it is recorded);
    images are independent in eval mode, so one backward of the summed scores serves all.
    """
    to_input = guided or input_grad
    x = x.detach().requires_grad_(to_input)
    with (frozen_eval(model), guided_relus(model) if guided else nullcontext(),
          base.capture(model, [layer], leaf=not to_input) as s, torch.enable_grad()):
        logits = model(x)
        target = logits.argmax(1) if target is None else target
        acts = s[layer]["act"]
        grads = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), [acts, x] if to_input else [acts])
    out = {"logits": logits.detach(), "target": target, "acts": acts.detach(), "grads": grads[0]}
    return {**out, "input_grad": grads[1]} if to_input else out


@torch.no_grad()
def cam_pass(model, x: torch.Tensor, last_stage: str, target: torch.Tensor | None = None) -> dict:
    """CAM needs no gradient: the last stage's maps and the logits from one forward."""
    with frozen_eval(model), base.capture(model, [last_stage]) as s:
        logits = model(x)
    target = logits.argmax(1) if target is None else target
    return {"logits": logits, "target": target, "acts": s[last_stage]["act"]}


def gradcam_map(out: dict, size) -> torch.Tensor:
    return upsample_unit(weighted_map(out["acts"], gradcam_weights(out["grads"])), size)


KINDS = ("cam", "gradcam", "guided_backprop", "guided_gradcam", "input_gradient")


def saliency(model, x: torch.Tensor, kind: str, layer: str, last_stage: str,
             target: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Maps for a batch: (B, H, W) in [0, 1] for cam/gradcam, (B, C, H, W) signed otherwise.
    The model is put in eval mode for the pass and left as it was."""
    size = x.shape[-2:]
    if kind == "cam":
        out = cam_pass(model, x, last_stage, target)
        maps = upsample_unit(weighted_map(out["acts"], cam_weights(model.fc.weight.detach(), out["target"])), size)
    elif kind == "gradcam":
        out = forward_backward(model, x, layer, target)
        maps = gradcam_map(out, size)
    elif kind in ("guided_backprop", "input_gradient"):
        out = forward_backward(model, x, layer, target, guided=kind == "guided_backprop", input_grad=True)
        maps = out["input_grad"]
    elif kind == "guided_gradcam":
        out = forward_backward(model, x, layer, target, guided=True)
        maps = out["input_grad"] * gradcam_map(forward_backward(model, x, layer, out["target"]), size)[:, None]
    else:
        raise ValueError(f"unknown saliency kind {kind!r}; known: {KINDS}")
    return maps, out


def pick_per_class(pred: np.ndarray, true: np.ndarray, conf: np.ndarray, n_classes: int, k: int) -> np.ndarray:
    """(n_classes, 2k) indices: per true class the k most confident correct, then the k most
    confident wrong predictions; -1 where there are not enough."""
    out = np.full((n_classes, 2 * k), -1, dtype=int)
    for c in range(n_classes):
        for j, ok in enumerate((True, False)):
            idx = np.flatnonzero((true == c) & ((pred == true) == ok))
            idx = idx[np.argsort(-conf[idx], kind="stable")][:k]
            out[c, j * k: j * k + len(idx)] = idx
    return out


def compute_kind(ctx, kind: str) -> dict:
    x_u8, y, names = ctx.head_batch()
    maps, logits = [], []
    for i in range(0, len(x_u8), ctx.opts.batch_size):
        m, out = saliency(ctx.model, ctx.norm(x_u8[i:i + ctx.opts.batch_size]), kind, ctx.stage,
                          ctx.model.stage_names[-1])
        maps.append(m.cpu())
        logits.append(out["logits"].cpu())
    logits = torch.cat(logits)
    prob = logits.softmax(1)
    conf, pred = prob.max(1)
    true = y.numpy()
    k = max(1, min(2, ctx.opts.topk // 2))
    return {"images": base.display(x_u8), "maps": torch.cat(maps).numpy(), "pred": pred.numpy(),
            "true": true, "conf": conf.numpy(), "names": names, "kind": kind,
            "layer": ctx.model.stage_names[-1] if kind == "cam" else ctx.stage,
            "picks": pick_per_class(pred.numpy(), true, conf.numpy(), len(names), k),
            "accuracy": float((pred.numpy() == true).mean())}


def draw_kind(r: dict, ctx) -> list[plots.Panel]:
    picks, names, k2 = r["picks"], r["names"], r["picks"].shape[1]
    cells, titles, overlay = [], [], []
    for c in range(len(names)):
        row_c, row_t, row_o = [], [], []
        for j, i in enumerate(picks[c]):
            if i < 0:
                row_c.append(None), row_t.append(""), row_o.append(None)
                continue
            m = r["maps"][i]
            verdict = "ok" if j < k2 // 2 else f"as {names[r['pred'][i]]}"
            row_t.append(f"{verdict} {r['conf'][i]:.2f}")
            if m.ndim == 2:  # heatmap on the image
                row_c.append(r["images"][i]), row_o.append(m)
            else:  # a gradient image
                g = plots.signed_unit(m)
                row_c.append(g[0] if g.shape[0] == 1 else g.transpose(1, 2, 0)), row_o.append(None)
        cells.append(row_c), titles.append(row_t), overlay.append(row_o)
    fig = plots.image_table(cells, titles, row_labels=list(names), overlay=overlay,
                            suptitle=f"{ctx.title}  {r['kind']} at {r['layer']}\nper class: "
                                     f"{k2 // 2} most confident right | {k2 // 2} most confident wrong")
    return [plots.Panel("", fig, f"{r['kind']} ({r['layer']}) for the most confident right and "
                                 f"wrong predictions of each class")]


CAM_NOTE = (  # shared by cam and gradcam: the report shows it once
    "<b>Why CAM works on a ResNet.</b> The last stage gives <i>K</i> feature maps <i>f<sub>k</sub></i>(<i>x</i>,"
    "<i>y</i>); global average pooling turns each into one number and the fully connected layer scores class "
    "<i>c</i> as <i>s<sub>c</sub></i> = ∑<sub><i>k</i></sub> <i>w<sub>ck</sub></i> · (1/<i>HW</i>) "
    "∑<sub><i>x</i>,<i>y</i></sub> <i>f<sub>k</sub></i>(<i>x</i>,<i>y</i>) + <i>b<sub>c</sub></i>. Both "
    "operations are linear, so the sums can be swapped: <i>s<sub>c</sub></i> = (1/<i>HW</i>) "
    "∑<sub><i>x</i>,<i>y</i></sub> <i>M<sub>c</sub></i>(<i>x</i>,<i>y</i>) + <i>b<sub>c</sub></i> with "
    "<i>M<sub>c</sub></i> = ∑<sub><i>k</i></sub> <i>w<sub>ck</sub></i> <i>f<sub>k</sub></i>. The class "
    "activation map <i>M<sub>c</sub></i> is a weighted sum of the feature maps whose average <em>is</em> the "
    "class score, so each location's share of the evidence can be read off directly, with no extra training. "
    "The gradient of <i>s<sub>c</sub></i> with respect to <i>f<sub>k</sub></i>(<i>x</i>,<i>y</i>) is "
    "<i>w<sub>ck</sub></i>/<i>HW</i> everywhere, so Grad-CAM at this layer gives the same map up to scale.")


def _register(kind: str, title: str, explanation: str, caption: str, note: str = ""):
    register(kind, draw_kind, title=title, explanation=explanation, caption=caption,
             note=note)(lambda ctx: compute_kind(ctx, kind))


_register("cam", "Class activation maps (CAM)",
          "Zhou et al.: the last-stage feature maps weighted by the classifier weights of one class, upsampled "
          "to the image: where the evidence for that class lies.",
          "class activation map (last stage, GAP + linear head)", note=CAM_NOTE)
_register("gradcam", "Grad-CAM",
          "Selvaraju et al.: feature maps weighted by the spatially averaged gradient of the class score; works "
          "for any layer, and equals CAM at the last stage of a GAP network.",
          "Grad-CAM at the chosen stage", note=CAM_NOTE)
_register("guided_backprop", "Guided backpropagation",
          "Springenberg et al.: the input gradient with negative gradients stopped at every ReLU, giving sharp "
          "but class-insensitive pixel patterns.",
          "guided backpropagation input gradients")
_register("guided_gradcam", "Guided Grad-CAM",
          "The pointwise product of guided backpropagation and the upsampled Grad-CAM map: fine pixel detail "
          "restricted to the class-discriminative region.",
          "guided backpropagation times Grad-CAM")
