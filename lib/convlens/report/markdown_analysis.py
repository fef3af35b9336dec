"""The analysis part of the README's results block: faithfulness of the saliency maps, Grad-CAM
by stage, and CKA between the networks, from the tables of the analysis index.json.

A deletion area is better lower, an insertion area higher (words.verdict decides on the printed
numbers); each network is judged at its last analysed epoch, against the random map of that epoch.
"""
from __future__ import annotations

from pathlib import Path

from convlens.report.words import area, best_of, shown, table, verdict
from convlens.storage.files import read_json
from convlens.storage.rundir import AnalysisDir

MAPS = {"cam": "CAM", "gradcam": "Grad-CAM", "guided_backprop": "guided backprop",
        "guided_gradcam": "guided Grad-CAM", "input_gradient": "the input gradient", "random": "the random map"}
BETTER = {"deletion": "lower", "insertion": "higher"}  # which area is the more faithful


def by_run(tab: dict | None, order=()) -> dict[str, dict]:
    """An index.json table -> run -> epoch -> column -> value; the runs in `order` first."""
    out: dict[str, dict] = {}
    for row in (tab or {}).get("rows", []):
        values = dict(zip(tab["columns"], row))
        out.setdefault(values["run"], {})[values["epoch"]] = values
    rank = {name: i for i, name in enumerate(order)}
    return dict(sorted(out.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def faithfulness(runs: dict[str, dict], analysis: Path) -> list[str]:
    """Every map's areas at each network's last analysed epoch, the best, each against the random
    map, and how the areas moved from the first analysed epoch."""
    if not runs:
        return []
    columns, rows, lines = ["map"], {m: [words] for m, words in MAPS.items()}, []
    for run, epochs in runs.items():
        last = epochs[max(epochs)]
        values = {(mode, m): area(last[f"{mode}_auc_{m}"]) for mode in BETTER for m in MAPS}
        columns += [f"{run}, epoch {last['epoch']}: {mode} ({BETTER[mode]} is better)" for mode in BETTER]
        for m in MAPS:
            rows[m] += [values[(mode, m)] for mode in BETTER]
        lines.append(best_maps(run, last["epoch"], values))
        lines += [against_random(run, last["epoch"], values, mode) for mode in BETTER]
        if len(epochs) > 1:
            lines += [trend(run, epochs[min(epochs)], last, mode) for mode in BETTER]
    return [f"**Faithfulness** of the saliency maps{setting(analysis)}: the area under the target class's "
            f"probability as pixels are deleted, or inserted, in the order a map ranks them", "",
            *table(columns, rows.values()), "", *lines]


def setting(analysis: Path) -> str:
    """' (N test images, <fill> fill, Grad-CAM at <layer>)' from the first faithfulness JSON."""
    entry = next((f for f in AnalysisDir(analysis).read_index().get("files", [])
                  if f["method"] == "faithfulness" and f["file"].endswith(".json")), None)
    if entry is None:
        return ""
    r = read_json(analysis / entry["file"])["result"]
    return f" ({r['images']} test images, {r['fill']} fill, Grad-CAM at {r['layer']})"


def best_maps(run: str, epoch: int, values: dict) -> str:
    best = {mode: best_of({m: values[(mode, m)] for m in MAPS}, BETTER[mode]) for mode in BETTER}
    return (f"- {run.capitalize()} network, epoch {epoch}: {MAPS[best['deletion']]} deletes best "
            f"({values[('deletion', best['deletion'])]}) and {MAPS[best['insertion']]} inserts best "
            f"({values[('insertion', best['insertion'])]}).")


def against_random(run: str, epoch: int, values: dict, mode: str) -> str:
    r = values[(mode, "random")]
    said = [f"{MAPS[m]} {verdict(values[(mode, m)], r, BETTER[mode])} the random map ({values[(mode, m)]} vs {r})"
            for m in MAPS if m != "random"]
    return f"- {run.capitalize()} network, epoch {epoch}, {mode} ({BETTER[mode]} is better): {'; '.join(said)}."


def trend(run: str, first: dict, last: dict, mode: str) -> str:
    """Which maps' areas grow, shrink or stay from the first analysed epoch to the last."""
    moves = {"grows": [], "shrinks": [], "stays": []}
    for m, words in MAPS.items():
        a, b = area(first[f"{mode}_auc_{m}"]), area(last[f"{mode}_auc_{m}"])
        move = "grows" if shown(b) > shown(a) else "shrinks" if shown(b) < shown(a) else "stays"
        moves[move].append(f"{words} {a} -> {b}")
    said = "; ".join(f"{move} for {', '.join(items)}" for move, items in moves.items() if items)
    return f"- {run.capitalize()} network, epoch {first['epoch']} to {last['epoch']}, {mode}: the area {said}."


def stage_list(values: dict[str, str]) -> str:
    return ", ".join(f"stage {s} {v}" for s, v in values.items())


def depth(runs: dict[str, dict]) -> list[str]:
    """Which stage's Grad-CAM is the most faithful, per network at its last analysed epoch."""
    lines = []
    for run, epochs in runs.items():
        last = epochs[max(epochs)]
        for mode in BETTER:
            prefix = f"{mode}_auc_stage"
            values = {c.removeprefix(prefix): area(v) for c, v in last.items() if c.startswith(prefix) and v is not None}
            lines.append(f"- {run.capitalize()} network, epoch {last['epoch']}, Grad-CAM by stage, {mode} "
                         f"({BETTER[mode]} is better): most faithful at stage {best_of(values, BETTER[mode])} "
                         f"({stage_list(values)}).")
    return ["**Grad-CAM across depth**: the same areas for Grad-CAM at each stage", "", *lines] if lines else []


def epoch_pair(epoch) -> tuple[str, str]:
    """A CKA row's epoch (2, or "3 vs 5" when the runs ended at different epochs) -> each run's epoch."""
    return tuple(epoch.split(" vs ")) if isinstance(epoch, str) else (str(epoch), str(epoch))


def cka(tab: dict | None) -> list[str]:
    """Linear CKA of each stage with the same stage of the other network: at each common epoch and
    between the last epochs; where the networks are most alike, and how far the epochs differ."""
    lines = []
    stages = {c.removeprefix("cka_layer"): c for c in (tab or {}).get("columns", []) if c.startswith("cka_")}
    for pair, epochs in by_run(tab).items():
        a, b = pair.split(" vs ")
        name = {e: f"{a} epoch {epoch_pair(e)[0]} vs {b} epoch {epoch_pair(e)[1]}" for e in epochs}
        last_key = max(epochs, key=lambda e: tuple(map(int, epoch_pair(e))))
        last = {s: area(epochs[last_key][c]) for s, c in stages.items()}
        lines += [*table(["epochs", *(f"stage {s}" for s in stages)],
                         [[name[e], *(area(epochs[e][c]) for c in stages.values())] for e in epochs]), "",
                  f"- {name[last_key].capitalize()}: most alike at stage {best_of(last)} ({stage_list(last)})."]
        others = [e for e in epochs if e != last_key]
        if others:
            gap = max(abs(shown(area(epochs[e][c])) - shown(last[s])) for e in others for s, c in stages.items())
            lines.append(f"- At {'epoch' if len(others) == 1 else 'epochs'} {', '.join(map(str, others))} each "
                         f"stage's CKA is within {gap:.3f} of its value at {name[last_key]}.")
    return ["**CKA** between the networks: linear CKA of each stage with the same stage of the other network",
            "", *lines] if lines else []
