"""Post-step in the driver: compose already written PNGs into comparison pages.

One page per pair of runs (each method's main figure at each run's last analyzed epoch,
side by side) and one strip per run and method across the analyzed epochs.
"""
from __future__ import annotations

import itertools
from pathlib import Path

from convlens.analysis import plots
from convlens.storage.rundir import AnalysisDir

NAME = "compare"  # the pages' method in index.json
ABOUT = {"title": "Comparisons across runs and epochs",
         "explanation": "Each method's main figure for two runs side by side at their last analysed epoch, and "
                        "for each run the same figure across its analysed epochs: what a pretext task such as "
                        "rotation learns next to supervision, and how the features form during training.",
         "caption": "composed pages of already drawn figures"}  # as registry.Method.describe gives them


def main_figures(entries: list[dict]) -> dict[tuple[str, int, str], dict]:
    """(run, epoch, method) -> the first PNG entry that method wrote for that checkpoint."""
    out = {}
    for e in entries:
        if e["file"].endswith(".png"):
            out.setdefault((e["run"], e["epoch"], e["method"]), e)
    return out


def pairs(runs: list[str], compare) -> list[tuple[str, str]]:
    if compare == "none":
        return []
    if compare == "all":
        return list(itertools.combinations(runs, 2))
    unknown = sorted({r for p in compare for r in p} - set(runs))
    if unknown:
        raise ValueError(f"compare: runs {unknown} were not analyzed; analyzed runs are {runs}")
    return [tuple(p) for p in compare]


def write_pages(entries: list[dict], out: Path, compare, methods: list[str]) -> list[dict]:
    figs = main_figures(entries)
    runs = sorted({r for r, _, _ in figs})
    epochs = {r: sorted({e for rr, e, _ in figs if rr == r}) for r in runs}
    folder = AnalysisDir(out) / AnalysisDir.COMPARE
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for a, b in pairs(runs, compare):
        ea, eb = epochs[a][-1], epochs[b][-1]
        rows = [m for m in methods if (a, ea, m) in figs or (b, eb, m) in figs]
        cells = [[_file(figs.get((a, ea, m))), _file(figs.get((b, eb, m)))] for m in rows]
        fig = plots.compose(cells, rows, [f"{a} epoch {ea}", f"{b} epoch {eb}"], f"{a} vs {b}")
        path = plots.save_png(fig, folder / f"{a}__vs__{b}.png", dpi=80)
        written.append({"run": f"{a} vs {b}", "epoch": max(ea, eb), "method": NAME,
                        "checkpoint": [figs.get((a, ea, m), {}).get("checkpoint") for m in rows[:1]][0],
                        "file": str(path), "caption": f"{a} (epoch {ea}) vs {b} (epoch {eb}), every method"})
    for run in runs:
        if len(epochs[run]) < 2:
            continue
        for m in methods:
            cells = [[_file(figs.get((run, e, m))) for e in epochs[run]]]
            if not any(cells[0]):
                continue
            fig = plots.compose(cells, [m], [f"epoch {e}" for e in epochs[run]], f"{run}: {m} across epochs")
            path = plots.save_png(fig, folder / f"{run}__{m}__epochs.png", dpi=80)
            written.append({"run": run, "epoch": epochs[run][-1], "method": NAME,
                            "checkpoint": figs[(run, epochs[run][-1], m)]["checkpoint"]
                            if (run, epochs[run][-1], m) in figs else None,
                            "file": str(path), "caption": f"{m} of {run} across epochs {epochs[run]}"})
    return written


def _file(entry: dict | None) -> Path | None:
    return Path(entry["file"]) if entry else None
