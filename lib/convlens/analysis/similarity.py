"""Post-step of the analyze job, one Ray task over every analysed checkpoint: how alike the
representations are, by linear CKA (analysis/cka.py) on the same test images.

- between two runs (the compare pairs): every stage of one against every stage of the other at
  each run's last analysed epoch, and stage against stage at every epoch both analysed;
- within a run: each analysed epoch's stages against the last epoch's (which stages settle first).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from convlens.analysis import base, cka, plots
from convlens.storage.files import write_atomic
from convlens.storage.rundir import AnalysisDir

NAME = "similarity"  # the figures' method in index.json
BATCH = 64  # images per CKA minibatch
ABOUT = {"title": "Representational similarity (linear CKA)",
         "explanation": "Linear centered kernel alignment (Kornblith et al. 2019) of the stage outputs on the same "
                        "test images, with the unbiased minibatch estimator (Nguyen et al. 2021): 1 for the same "
                        "representation up to rotation and scale, about 0 for unrelated ones. Between two runs, "
                        "every stage against every stage (the diagonal: how much the same stage of two networks "
                        "encodes alike) and per stage across the epochs both analysed; within a run, each epoch's "
                        "stages against the last epoch's, so one sees which stages settle first.",
         "caption": "linear CKA between runs and between epochs"}  # as registry.Method.describe gives them


def representations(ctx) -> dict[str, torch.Tensor]:
    """stage -> (N, D) flattened outputs of every stage on ctx.images (upright test images)."""
    stages = list(ctx.model.stage_names)
    parts: dict[str, list] = {s: [] for s in stages}
    for i in range(0, len(ctx.images), ctx.opts.batch_size):
        acts = base.activations(ctx, ctx.images[i:i + ctx.opts.batch_size], stages)
        for s in stages:
            parts[s].append(torch.from_numpy(acts[s]).flatten(1))
    return {s: torch.cat(v) for s, v in parts.items()}


def matrix(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> np.ndarray:
    """(stages of a, stages of b) CKA, accumulated over minibatches of BATCH images."""
    acc = cka.MinibatchCKA(len(a), len(b))
    n = len(next(iter(a.values())))
    for i in range(0, n - 3, BATCH):  # a last batch under 4 images is left out
        acc.update([v[i:i + BATCH] for v in a.values()], [v[i:i + BATCH] for v in b.values()])
    return acc.value().numpy()


def diagonal(a: dict, b: dict) -> dict[str, float]:
    """CKA of each stage both have with itself."""
    common = [s for s in a if s in b]
    m = matrix({s: a[s] for s in common}, {s: b[s] for s in common})
    return {s: float(m[i, i]) for i, s in enumerate(common)}


def compute(checkpoints: list[tuple[str, int, str]], pairs: list[tuple[str, str]], opts,
            device: str = "cpu") -> dict:
    """Every CKA the post-step shows, as plain numbers and lists (JSON as it is)."""
    reps, images, epochs = {}, {}, {}
    for run, epoch, folder in checkpoints:
        ctx = base.build_context(Path(folder), opts, device)
        reps[(run, epoch)], images[run] = representations(ctx), ctx.images
        epochs.setdefault(run, []).append(epoch)
    out = {"between": [], "within": []}
    for a, b in pairs:
        if not torch.equal(images[a], images[b]):
            out["between"].append({"runs": [a, b], "skipped": "different test images (dataset or subset)"})
            continue
        ea, eb = max(epochs[a]), max(epochs[b])
        common = sorted(set(epochs[a]) & set(epochs[b]))
        out["between"].append({"runs": [a, b], "epochs": [ea, eb], "rows": list(reps[(a, ea)]),
                               "cols": list(reps[(b, eb)]), "matrix": matrix(reps[(a, ea)], reps[(b, eb)]).tolist(),
                               "per_epoch": {str(e): diagonal(reps[(a, e)], reps[(b, e)]) for e in common}})
    for run, es in epochs.items():
        if len(es) > 1:
            last = max(es)
            out["within"].append({"run": run, "epochs": sorted(es), "stages": list(reps[(run, last)]),
                                  "to_last": [list(diagonal(reps[(run, e)], reps[(run, last)]).values())
                                              for e in sorted(es)]})
    return out


def table(result: dict) -> dict:
    """index.json's table: per pair of runs and epoch, the CKA of each stage with its namesake
    (the last epochs' row is labelled "5 vs 3" when the runs ended at different epochs)."""
    rows, stages = [], []
    for p in result["between"]:
        if "matrix" not in p:
            continue
        shared = [s for s in p["rows"] if s in p["cols"]]
        stages += [s for s in shared if s not in stages]
        m = np.array(p["matrix"])
        per = {int(e): d for e, d in p["per_epoch"].items()}
        (ea, eb) = p["epochs"]
        if ea != eb:
            per[f"{ea} vs {eb}"] = {s: float(m[p["rows"].index(s), p["cols"].index(s)]) for s in shared}
        rows += [(" vs ".join(p["runs"]), e, d) for e, d in per.items()]
    return {"columns": ["run", "epoch", *(f"cka_{s}" for s in stages)],
            "rows": [[r, e, *(d.get(s) for s in stages)] for r, e, d in rows]} if rows else {}


def figures(result: dict) -> list[tuple[str, plots.plt.Figure, str, str]]:
    """(file stem, figure, caption, run the figure belongs to) for every heatmap."""
    out = []
    for p in result["between"]:
        if "matrix" in p:
            (a, b), (ea, eb) = p["runs"], p["epochs"]
            fig = plots.heatmap(np.array(p["matrix"]), p["rows"], p["cols"], f"linear CKA: {a} (epoch {ea}) vs "
                                f"{b} (epoch {eb})", f"{b} stage", f"{a} stage")
            out.append((f"{a}__vs__{b}__cka", fig, f"CKA of every stage of {a} against every stage of {b}", a))
    for w in result["within"]:
        fig = plots.heatmap(np.array(w["to_last"]), [f"epoch {e}" for e in w["epochs"]], w["stages"],
                            f"{w['run']}: CKA of each stage with itself at epoch {w['epochs'][-1]}", "stage", "")
        out.append((f"{w['run']}__cka_epochs", fig, f"CKA of {w['run']}'s stages with their last analysed epoch",
                    w["run"]))
    return out


def run(checkpoints: list[tuple[str, int, str]], pairs: list[tuple[str, str]], opts, out_dir: str,
        device: str = "cpu") -> tuple[list[dict], dict]:
    """The Ray task: compute, draw, write; returns (index entries, index table)."""
    result = compute(checkpoints, pairs, opts, device)
    folder = AnalysisDir(out_dir) / AnalysisDir.COMPARE
    folder.mkdir(parents=True, exist_ok=True)
    last = {r: (e, f) for r, e, f in sorted(checkpoints, key=lambda c: c[1])}  # run -> its last checkpoint
    entries = []
    for stem, fig, caption, owner in figures(result):
        path = plots.save_png(fig, folder / f"{stem}.png")
        entries.append({"run": owner, "epoch": last[owner][0], "method": NAME, "checkpoint": last[owner][1],
                        "file": str(path), "caption": caption})
    path = folder / f"{NAME}.json"
    write_atomic(path, json.dumps({"method": NAME, "result": result}, indent=1).encode())
    entries.append({"run": "all", "epoch": max(e for _, e, _ in checkpoints), "method": NAME, "checkpoint": None,
                    "file": str(path), "caption": "linear CKA: numbers"})
    return entries, table(result)
