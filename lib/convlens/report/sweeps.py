"""A sweep: its trials table, the best configuration, and its figures."""
from __future__ import annotations

from pathlib import Path

from convlens.report.html import Text, anchor, as_number, esc, img, read_csv, table
from convlens.storage.rundir import SweepDir, early_stopping_saved, trial_epochs


def best_row(cols: list[str], rows: list[list[str]]) -> tuple[str, list[str]] | None:
    """The best trial: highest accuracy column, else lowest error/loss column."""
    for metric, sign in (("best_val_accuracy", 1), ("val_accuracy", 1), ("accuracy", 1),
                         ("val_error", -1), ("val_loss", -1), ("loss", -1)):
        if metric in cols:
            i = cols.index(metric)
            scored = [r for r in rows if as_number(r[i]) is not None]
            if scored:
                return metric, max(scored, key=lambda r: sign * as_number(r[i]))
    return None


def sweep_section(folder: Path) -> str:
    sweep = SweepDir(folder)
    cols, rows = read_csv(sweep / SweepDir.TRIALS)
    parts = [f"<h2 id='{anchor(folder)}'>Sweep {esc(folder.name)}</h2>",
             f"<p>{len(rows)} trials from <code>{esc(folder)}</code>. Each row is one training run with the "
             f"sampled hyper-parameters and its final score.{search_sentence(cols, rows)}"
             f"{epochs_sentence(cols, rows)}</p>",
             trials_table(cols, rows)]
    best = best_row(cols, rows)
    if best:
        metric, row = best
        parts += [f"<h3>Best configuration (by {esc(metric)})</h3>",
                  table(["parameter", "value"], [[c, cell(c, v)] for c, v in zip(cols, row)])]
    if (sweep / SweepDir.BEST_JOB).is_file():
        parts.append(f"<details><summary>{esc(SweepDir.BEST_JOB)}</summary>"
                     f"<pre>{esc((sweep / SweepDir.BEST_JOB).read_text())}</pre></details>")
    parts += [img(p, p.stem.replace("_", " ")) for p in sorted(folder.glob("*.png"))]
    return "".join(parts)


SEARCHERS = {"random": "random draws", "grid": "a grid", "tpe": "TPE (Optuna)"}
SCHEDULERS = {"asha": "ASHA early stopping", "pbt": "Population Based Training", "none": "no early stopping"}


def search_sentence(cols: list[str], rows: list[list[str]]) -> str:
    """How the trials were found, from trials.csv's searcher and scheduler columns; for PBT,
    where the perturbations are."""
    if not rows or not {"searcher", "scheduler"} <= set(cols):
        return ""
    search, sched = rows[0][cols.index("searcher")], rows[0][cols.index("scheduler")]
    text = f" Trials from {SEARCHERS.get(search, search)}, with {SCHEDULERS.get(sched, sched)}."
    if sched == "pbt":
        text += (" The perturbations column lists each time a trial took another trial's checkpoint (the epoch, "
                 "the donor, the values it went on with); the learning-rate figure shows each trial's model's "
                 "learning rate per epoch, its lineage included.")
    return text


def epochs_sentence(cols: list[str], rows: list[list[str]]) -> str:
    """What early stopping saved, from trials.csv's epochs and planned_epochs columns."""
    if not {"epochs", "planned_epochs"} <= set(cols):
        return ""
    trained, planned = trial_epochs(dict(zip(cols, r)) for r in rows)
    saved = early_stopping_saved(trained, planned)
    return f" The trials trained {trained} of the {planned} epochs planned{saved}."


IDS = ("trial_id", "run", "wandb_run_id", "node")  # shown as written, never as numbers


def cell(column: str, value: str):
    return Text(value) if column in IDS else value


LEAD = ("trial_id", "best_val_accuracy", "test_accuracy", "status", "epochs", "best_epoch")  # the scores first


def trials_table(cols: list[str], rows: list[list[str]]) -> str:
    """trials.csv without its paths: scores first, then the sampled values under their own field
    names, then the rest (why a trial stopped, its W&B id, its node)."""
    shown = [c for c in cols if c not in ("run", "run_dir", "best", "planned_epochs", "searcher", "scheduler")
             and (c != "stop_reason" or any(r[cols.index(c)] for r in rows))]
    order = ([c for c in LEAD if c in shown] + [c for c in shown if c.startswith("config/")]
             + [c for c in shown if c not in LEAD and not c.startswith("config/")])
    keep = [cols.index(c) for c in order]
    return table([c.removeprefix("config/") for c in order],
                 [[cell(cols[i], r[i]) for i in keep] for r in rows])
