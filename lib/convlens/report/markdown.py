"""`convlens report --markdown DEMO`: the README's results block, written from a demo's files.

Reads what `convlens demo` leaves under its root: each network's summary.json, config.yaml,
metrics.jsonl, attempts.jsonl and probes.json; the sweep's trials.csv and its trials'
metrics.jsonl; the analysis index.json (markdown_analysis); timings.json and report.html.
Every number is read from those files, and every word that compares numbers is computed from
the numbers as printed (words.py). `into` puts the block between BEGIN and END in a file such
as README.md. Files only: no torch, no Ray.
"""
from __future__ import annotations

import csv
from pathlib import Path

import yaml

from convlens.base.errors import ConfigError
from convlens.report import markdown_analysis as analysis
from convlens.report.page import discover
from convlens.report.words import best_of, cell, pct, plural, seconds, shown, table, verdict
from convlens.storage.files import read_json
from convlens.storage.rundir import AnalysisDir, DemoDir, RunDir, SweepDir, trial_epochs

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
PROBES = {"linear": "linear", "mlp": "MLP", "knn": "kNN"}


def markdown(path, command: str | None = None) -> str:
    """The results block (without its markers) of the demo under `path`; `command` is the
    command line it says wrote it."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ConfigError(f"report: {root} is not a folder")
    found = discover([root])
    if not found["runs"]:
        raise ConfigError(f"report: no run ({RunDir.SUMMARY}) under {root}")
    runs = load_runs(found["runs"])
    index = AnalysisDir(found["analyses"][0]).read_index() if found["analyses"] else {}
    tables = index.get("tables", {})
    parts = [header(root, runs, command or f"convlens report --markdown {path}"), timings(root, index),
             training(runs), probes(runs), *(sweep(folder) for folder in found["sweeps"])]
    if found["analyses"]:
        parts += [analysis.faithfulness(analysis.by_run(tables.get("faithfulness"), runs), found["analyses"][0]),
                  analysis.depth(analysis.by_run(tables.get("gradcam_depth"), runs)),
                  analysis.cka(tables.get("similarity"))]
    return "\n\n".join("\n".join(p) for p in parts if p) + "\n"


def load_runs(folders: list[Path]) -> dict[str, dict]:
    """Run name -> its summary, config, metrics, attempts and probes; supervised first."""
    runs = {}
    for folder in folders:
        run = RunDir(folder)
        summary = run.read_summary()
        runs[summary.get("run", folder.name)] = {
            "summary": summary, "config": yaml.safe_load((run / RunDir.CONFIG).read_text()),
            "metrics": run.read_metrics(), "attempts": run.read_attempts(), "probes": read_json(run / RunDir.PROBES)}
    return dict(sorted(runs.items(), key=lambda kv: kv[1]["summary"].get("task") != "supervised"))


def header(root: Path, runs: dict, command: str) -> list[str]:
    """Which command wrote the block, from which folder, and the machine the demo ran on."""
    machine = (read_json(root / DemoDir.TIMINGS) or {}).get("machine")
    where = f" on a machine with {machine['cpus']} CPUs and {machine['memory_gib']} GiB of memory," if machine else ""
    devices = sorted({a["device"] for r in runs.values() for a in r["attempts"][-1:]})
    return [f"Written by `{command}` from the files the demo left in `{root}`,{where} training on "
            f"{' and '.join(devices)}."]


def timings(root: Path, index: dict) -> list[str]:
    """The demo's wall time per step, the analysis's output, the report's size."""
    record, report = read_json(root / DemoDir.TIMINGS), root / "report.html"
    lines = []
    if record:
        steps = ", ".join(f"{name} {seconds(s)}" for name, s in record["steps"].items())
        lines.append(f"- The demo took {seconds(record['seconds'])}: {steps}.")
    if index:
        lines.append(f"- The analysis wrote {len(index['files'])} files from {len(index['checkpoints'])} "
                     f"checkpoints in {seconds(index['seconds'])}.")
    if report.is_file():
        figures = report.read_text(encoding="utf-8").count("<img ")
        lines.append(f"- The report embeds {figures} figures in {report.stat().st_size / 1e6:.1f} MB.")
    return ["**Timings**", "", *lines] if lines else []


def training(runs: dict) -> list[str]:
    """One row per network: its set-up and what it reached."""
    rows = []
    for name, r in runs.items():
        s, c = r["summary"], r["config"]
        speed = [m["images_per_second"] for m in r["metrics"]]
        rows.append([name, s["task"], f"ResNet {c['model']['layers']} x {c['model']['width']}",
                     f"{s['epochs']} epochs {c['schedule']['name']}, {plural(s['workers'], 'worker')}, "
                     f"{c['data'].get('train_subset') or 'all'} training images",
                     pct(s["test_accuracy"]), f"{pct(s['best_val_accuracy'])} (epoch {s['best_epoch']})",
                     f"{min(speed):.0f}-{max(speed):.0f}", f"{s['train_seconds']:.0f} / {s['wall_seconds']:.0f}"])
    return ["**Training** (a rotation network's accuracies are of telling each test image's rotation)", "",
            *table(["network", "task", "model", "training", "test accuracy", "best validation accuracy",
                    "images/s", "seconds: epochs / wall"], rows)]


def probe_values(probes: dict) -> dict[tuple[str, str], str]:
    """(stage, probe) -> test accuracy as printed."""
    return {(stage, p): pct(v[f"{p}_accuracy"]) for stage, v in probes["stages"].items() for p in PROBES}


def probes(runs: dict) -> list[str]:
    """The probe table; the networks' linear probes against each other; each network's best probe."""
    probed = {name: probe_values(r["probes"]) for name, r in runs.items() if r["probes"]}
    if not probed:
        return []
    rows = [[name, stage, *(values[(stage, p)] for p in PROBES)]
            for name, values in probed.items() for stage in dict.fromkeys(s for s, _ in values)]
    chance = pct(next(r["probes"]["chance"] for r in runs.values() if r["probes"]))
    lines = [f"**Probes** on frozen features of each network's best checkpoint: test accuracy on the classes "
             f"(chance {chance})", "", *table(["network", "stage", *PROBES.values()], rows), ""]
    names = list(probed)
    if len(names) == 2:
        a, b = (probed[n] for n in names)
        for stage in dict.fromkeys(s for s, _ in a):
            if (stage, "linear") in b:
                x, y = a[(stage, "linear")], b[(stage, "linear")]
                lines.append(f"- Stage {stage}, linear probe: the {names[0]} network {verdict(x, y)} the "
                             f"{names[1]} network ({x} vs {y}).")
    for name, values in probed.items():
        stage, p = best_of(values)
        lines.append(f"- The {name} network's best probe: {PROBES[p]} at stage {stage} ({values[(stage, p)]}).")
    return lines


def sweep(folder: Path) -> list[str]:
    """The trials table, the best trial, what ASHA stopped, and whether a validation curve ever fell."""
    with open(folder / SweepDir.TRIALS, newline="") as f:
        trials = list(csv.DictReader(f))
    space = [c for c in trials[0] if c.startswith("config/")]
    rows = [[t["trial_id"], *(cell(t[c]) for c in space), t["epochs"], pct(float(t["best_val_accuracy"])),
             pct(float(t["test_accuracy"])) if t["test_accuracy"] else "-", ended(t)] for t in trials]
    ranked = sorted(trials, key=lambda t: -shown(pct(float(t["best_val_accuracy"]))))
    best, others = ranked[0], [pct(float(t["best_val_accuracy"])) for t in ranked[1:]]
    test = f" and {pct(float(best['test_accuracy']))} test" if best["test_accuracy"] else ""
    stopped = [t for t in trials if t["status"] == "early_stopped"]
    trained, planned = trial_epochs(trials)
    return [f"**Sweep** `{folder.name}`: {len(trials)} trials", "",
            *table(["trial", *(c.removeprefix("config/") for c in space), "epochs", "best validation accuracy",
                    "test accuracy", "ended"], rows), "",
            f"- The best trial, {best['trial_id']}, reaches {pct(float(best['best_val_accuracy']))} validation{test} "
            f"accuracy" + (f"; the others {', '.join(others)} validation." if others else "."),
            f"- ASHA stopped {len(stopped)} of the {len(trials)} trials; the trials trained {trained} of the "
            f"{planned} epochs planned.",
            falls(folder, trials)]


def ended(trial: dict) -> str:
    return {"completed": "finished", "early_stopped": trial["stop_reason"]}.get(
        trial["status"], f"{trial['status']}: {trial['stop_reason']}".rstrip(": "))


def falls(folder: Path, trials: list[dict]) -> str:
    """Whether any trial's validation accuracy fell from one epoch to the next, and by how much at most."""
    drops = {}
    for t in trials:
        acc = [shown(pct(m["val_accuracy"])) for m in RunDir(SweepDir(folder).trials_dir / t["run"]).read_metrics()]
        worst = max(((a - b, i + 1) for i, (a, b) in enumerate(zip(acc, acc[1:]))), default=(0.0, 0))
        if worst[0] > 0:
            drops[t["trial_id"]] = worst
    if not drops:
        return "- Validation accuracy never falls from one epoch to the next in any trial."
    trial, (points, epoch) = max(drops.items(), key=lambda kv: kv[1][0])
    return (f"- Validation accuracy falls from one epoch to the next in {len(drops)} of the {len(trials)} trials, "
            f"by at most {points:.1f} points (trial {trial}, epoch {epoch} to {epoch + 1}).")


def into(block: str, file) -> Path:
    """Replace what lies between the BEGIN and END lines of `file` with `block`; the markers stay."""
    file = Path(file)
    text = file.read_text(encoding="utf-8")
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ConfigError(f"report: {file} needs one {BEGIN} line and, after it, one {END} line")
    head, rest = text.split(BEGIN)
    file.write_text(f"{head}{BEGIN}\n{block.rstrip()}\n{END}{rest.split(END)[1]}", encoding="utf-8")
    return file
