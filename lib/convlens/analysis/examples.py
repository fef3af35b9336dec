"""Where the head goes wrong: hardest and easiest test images by loss, the confusion matrix
and per-class accuracy (on rotated images with rotation labels for a rotation network)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from convlens.analysis import base, plots
from convlens.analysis.registry import register


@torch.no_grad()
def predictions(ctx) -> dict:
    x, y, names = ctx.head_batch()
    logits = torch.from_numpy(base.features(ctx, x, pre_logits=False))
    loss = F.cross_entropy(logits, y, reduction="none")
    return {"x": x, "true": y.numpy(), "pred": logits.argmax(1).numpy(), "loss": loss.numpy(), "names": names}


def confusion(true: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """(n, n) counts, rows = true class, columns = predicted."""
    return np.bincount(true * n + pred, minlength=n * n).reshape(n, n)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    return np.diag(cm) / np.maximum(cm.sum(1), 1)


def compute_examples(ctx) -> dict:
    p = predictions(ctx)
    order = np.argsort(-p["loss"], kind="stable")
    k = min(8, len(order) // 2)
    pick = np.concatenate([order[:k], order[::-1][:k]])
    return {"images": base.display(p["x"][torch.from_numpy(pick)]), "true": p["true"][pick],
            "pred": p["pred"][pick], "loss": p["loss"][pick], "names": p["names"], "k": k,
            "mean_loss": float(p["loss"].mean())}


def draw_examples(r: dict, ctx) -> list[plots.Panel]:
    k, names = r["k"], r["names"]
    titles = [f"{names[t]}->{names[p]}\nloss {l:.2f}" for t, p, l in zip(r["true"], r["pred"], r["loss"])]
    fig = plots.image_table([list(r["images"][:k]), list(r["images"][k:])], [titles[:k], titles[k:]],
                            row_labels=["hardest", "easiest"],
                            suptitle=f"{ctx.title}  highest and lowest loss (true->predicted)", size=1.4)
    return [plots.Panel("", fig, f"{k} hardest and {k} easiest test images by loss")]


def compute_confusion(ctx) -> dict:
    p = predictions(ctx)
    cm = confusion(p["true"], p["pred"], len(p["names"]))
    return {"confusion": cm, "per_class_accuracy": per_class_accuracy(cm), "names": p["names"],
            "accuracy": float(np.trace(cm) / cm.sum())}


def draw_confusion(r: dict, ctx) -> list[plots.Panel]:
    fig1 = plots.matrix(r["confusion"], r["names"], f"{ctx.title}  confusion (accuracy {r['accuracy']:.3f})",
                        "predicted", "true")
    fig2 = plots.bars(r["per_class_accuracy"], r["names"], f"{ctx.title}  per-class accuracy", "accuracy")
    return [plots.Panel("", fig1, f"confusion matrix, accuracy {r['accuracy']:.3f}"),
            plots.Panel("per_class", fig2, "accuracy of each class")]


register("examples", draw_examples, title="Hardest and easiest images",
         explanation="Test images ranked by the loss of their true class: the easiest show prototypes, the "
                     "hardest show label noise, ambiguous classes and blind spots.",
         caption="hardest and easiest images by loss")(compute_examples)
register("confusion", draw_confusion, title="Confusion matrix",
         explanation="Row = true class, column = predicted class; off-diagonal mass shows which classes the "
                     "network mixes up (e.g. shirt, T-shirt and pullover).",
         caption="confusion matrix and per-class accuracy")(compute_confusion)
