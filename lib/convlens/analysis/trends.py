"""Post-step in the driver: the numbers methods declare as their table (registry `table`),
gathered over runs and epochs into index.json's "tables", and drawn across epochs, so a user
sees e.g. whether saliency maps grow more faithful as a network trains."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from convlens.analysis import plots
from convlens.storage.rundir import AnalysisDir


def collect(entries: list[dict], columns: dict[str, tuple[str, ...]]) -> dict[str, dict]:
    """method -> {"columns": ["run", "epoch", *table], "rows": [[run, epoch, *values]]}, rows
    sorted by run and epoch; methods without a table or without results are left out."""
    out = {}
    for method, cols in columns.items():
        rows = []
        for e in entries:
            if e["method"] == method and e["file"].endswith(".json"):
                result = json.loads(Path(e["file"]).read_text())["result"]
                rows.append([e["run"], e["epoch"], *(result.get(c) for c in cols)])
        if cols and rows:
            out[method] = drop_empty_columns(["run", "epoch", *cols], sorted(rows, key=lambda r: (r[0], r[1])))
    return out


def drop_empty_columns(columns: list[str], rows: list[list]) -> dict:
    """Without the columns no row has a value for (e.g. stage 4 of three-stage networks)."""
    keep = [i for i in range(len(columns)) if any(row[i] is not None for row in rows)]
    return {"columns": [columns[i] for i in keep], "rows": [[row[i] for i in keep] for row in rows]}


def series(table: dict, run: str) -> tuple[list[int], dict[str, dict[str, np.ndarray]]]:
    """One run's epochs and its columns grouped by their first word ("deletion_auc_cam" goes to
    "deletion" as "auc_cam"): group -> label -> values per epoch (NaN where missing)."""
    rows = [r for r in table["rows"] if r[0] == run]
    groups: dict[str, dict[str, np.ndarray]] = {}
    for j, col in enumerate(table["columns"][2:], 2):
        values = np.array([np.nan if r[j] is None else r[j] for r in rows], dtype=float)
        if np.isfinite(values).any():
            head, _, rest = col.partition("_")
            groups.setdefault(head, {})[rest or head] = values
    return [r[1] for r in rows], groups


def write_plots(tables: dict[str, dict], out: Path, checkpoints: dict[tuple[str, int], str]) -> list[dict]:
    """One figure per method and run with at least two epochs: each table column across epochs.
    checkpoints: (run, epoch) -> folder, for the entries' last-epoch checkpoint."""
    folder = AnalysisDir(out) / AnalysisDir.COMPARE
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for method, table in tables.items():
        for run in sorted({r[0] for r in table["rows"]}):
            epochs, groups = series(table, run)
            if len(epochs) < 2 or not groups:
                continue
            fig = plots.lines([(g, np.array(epochs), ys) for g, ys in groups.items()],
                              f"{run}: {method} across epochs", "epoch", "value")
            path = plots.save_png(fig, folder / f"{run}__{method}__trend.png", dpi=90)
            written.append({"run": run, "epoch": epochs[-1], "method": method, "checkpoint": checkpoints.get((run, epochs[-1])),
                            "file": str(path), "caption": f"{method} of {run} across epochs {epochs}"})
    return written
