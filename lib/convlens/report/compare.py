"""The supervised vs. rotation section: the two runs' scores, the probe table (how well each
network's frozen features separate the classes, stage by stage) and the two networks' kNN
retrievals side by side."""
from __future__ import annotations

import json
from pathlib import Path

from convlens.report.html import img, table
from convlens.storage.rundir import AnalysisDir, RunDir

COMPARE_ANCHOR = "compare"
PROBES = (("linear", "linear_accuracy"), ("MLP", "mlp_accuracy"), ("kNN", "knn_accuracy"))

INTRO = ("<p>The supervised network is trained on the class labels. The rotation network never sees a "
         "label: each image is rotated by 0, 90, 180 or 270 degrees and the network predicts which "
         "(a 4-way task, chance 0.25, Gidaris et al. 2018). Its accuracy is on that pretext task and is not "
         "comparable with the class accuracy; what matters is whether its features separate the classes.</p>")

PROBE_WORDS = ("<p>Both networks' frozen features at each stage (average-pooled), fed to a linear "
               "classifier, a small MLP and a kNN vote, all fitted on the class labels and scored on the "
               "test set (Gidaris et al. 2018, section 3). The gap is supervised minus rotation: how much "
               "of the supervised network's class information the pretext task recovered without a "
               "label.</p>")


def comparison_section(runs: list[dict], analyses: list[Path]) -> str:
    sup = next(r for r in runs if r["summary"].get("task") == "supervised")
    rot = next(r for r in runs if r["summary"].get("task") == "rotation")
    rows = [[r["summary"].get("run"), r["summary"].get("task"), r["summary"].get("best_val_accuracy"),
             r["summary"].get("test_accuracy"), r["summary"].get("epochs")] for r in (sup, rot)]
    parts = [f"<h2 id='{COMPARE_ANCHOR}'>Supervised vs. rotation pre-training</h2>", INTRO,
             table(["run", "task", "best val accuracy", "test accuracy", "epochs"], rows)]
    probes = [read_probes(r["dir"]) for r in (sup, rot)]
    if all(probes):
        parts += ["<h3>Probes: class accuracy of each network's features</h3>", PROBE_WORDS,
                  table(["stage", "network", *(name for name, _ in PROBES)], probe_rows(*probes))]
    retrievals = [latest_knn_figure(analyses, r["summary"].get("run", r["dir"].name)) for r in (sup, rot)]
    if all(retrievals):
        parts += ["<h3>Nearest neighbours in each network's feature space</h3>",
                  "<p>The same test images as queries and their nearest training images by cosine "
                  "similarity of the features, supervised network left, rotation network right. Their "
                  "kNN accuracy is on the analysis's sample of images (penultimate features), so it differs "
                  "from the probe table's kNN on the whole test set.</p>",
                  "<div class='pair'>", *(img(folder / e["file"], f"{e['run']}, epoch {e['epoch']}: {e['caption']}",
                                              "48%") for folder, e in retrievals), "</div>"]
    return "".join(parts)


def read_probes(run_dir: Path) -> dict | None:
    path = RunDir(run_dir) / RunDir.PROBES
    return json.loads(path.read_text()) if path.is_file() else None


def probe_rows(sup: dict, rot: dict) -> list[list]:
    """Per stage both networks and their gap, then chance."""
    rows = []
    for stage in sorted(set(sup["stages"]) & set(rot["stages"]), key=int):
        a, b = sup["stages"][stage], rot["stages"][stage]
        rows.append([stage, sup["run"], *(a[key] for _, key in PROBES)])
        rows.append([stage, rot["run"], *(b[key] for _, key in PROBES)])
        rows.append([stage, "gap", *(a[key] - b[key] for _, key in PROBES)])
    chance = sup.get("chance")
    if chance is not None:
        rows.append(["", "chance", *([chance] * len(PROBES))])
    return rows


def latest_knn_figure(analyses: list[Path], run: str) -> tuple[Path, dict] | None:
    """The kNN retrieval figure of `run`'s latest analysed epoch, from any analysis folder."""
    found = [(folder, e) for folder in analyses for e in AnalysisDir(folder).read_index().get("files", [])
             if e.get("method") == "knn" and e.get("run") == run and e["file"].endswith(".png")
             and (folder / e["file"]).is_file()]
    return max(found, key=lambda fe: fe[1].get("epoch", 0)) if found else None
