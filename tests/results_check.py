"""Checks the README's results block against the demo's files, sentence by sentence.

Each checker recognises one kind of line, parses the numbers it states, compares them with the
files the demo wrote (read here on their own: summaries, probes.json, trials.csv and the trials'
metrics, the per-checkpoint faithfulness and gradcam_depth JSONs, compare/similarity.json,
timings.json), and checks each comparing word (beats / loses to / ties with, most, grows /
shrinks, falls) against the numbers the line states. Every line of the block that holds a
digit must be recognised by a checker.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from convlens.report.markdown import PROBES
from convlens.report.markdown_analysis import MAPS

MAP_KEY = {words: key for key, words in MAPS.items()}
PROBE_KEY = {words: key for key, words in PROBES.items()}
NUM = r"(\d+(?:\.\d+)?)"


def load(root: Path) -> dict:
    """The demo's files, keyed for the checkers."""
    read = lambda p: json.loads(p.read_text())  # noqa: E731
    runs = {p.parent.name: {"dir": p.parent, "summary": read(p)} for p in root.glob("*/summary.json")}
    analysis = {}
    for p in root.glob("analysis/*/*/*.json"):
        if p.parts[-3] == "wandb":  # the analysis runs' W&B segments (convlens.json)
            continue
        d = read(p)
        analysis[(d["method"], d["run"], d["epoch"])] = d["result"]
    sweep_csv = next(root.glob("*/trials.csv"))
    with open(sweep_csv, newline="") as f:
        trials = {t["trial_id"]: t for t in csv.DictReader(f)}
    return {"root": root, "runs": runs, "analysis": analysis, "trials": trials, "sweep": sweep_csv.parent,
            "similarity": read(root / "analysis/compare/similarity.json")["result"]["between"][0],
            "timings": read(root / "timings.json"), "index": read(root / "analysis/index.json")}


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def area(x: float) -> str:
    return f"{x:.3f}"


def seconds(s: float) -> str:
    return f"{s:.0f}" if s >= 10 else f"{s:.1f}"


def best(values: dict, lower: bool) -> set:
    """The keys holding the best of the values stated (floats)."""
    top = (min if lower else max)(values.values())
    return {k for k, v in values.items() if v == top}


def check_words(line: str) -> None:
    """Every 'X beats / loses to / ties with Y (a vs b)' in a line agrees with a and b."""
    lower = "(lower is better)" in line
    for word, a, b in re.findall(rf"(beats|loses to|ties with) [^()]*\({NUM}%? vs {NUM}%?\)", line):
        a, b = float(a), float(b)
        right = "ties with" if a == b else "beats" if (a < b if lower else a > b) else "loses to"
        assert word == right, f"{word!r} should be {right!r}: {line}"


def stages(text: str) -> dict[str, float]:
    return {s: float(v) for s, v in re.findall(rf"stage (\d+) {NUM}", text)}


def header(line: str, src: dict) -> bool:
    m = re.fullmatch(rf"Written by `(.+?)` from the files the demo left in `(.+?)`, on a machine with (\d+) CPUs "
                     rf"and {NUM} GiB of memory, training on (\w+)\.", line)
    if not m:
        return False
    machine = src["timings"]["machine"]
    assert m[1].startswith("convlens report --markdown") and Path(m[2]).resolve() == src["root"].resolve()
    assert (int(m[3]), float(m[4])) == (machine["cpus"], machine["memory_gib"]) and m[5] == "cpu"
    return True


def timings(line: str, src: dict) -> bool:
    t, index = src["timings"], src["index"]
    if m := re.fullmatch(rf"- The demo took {NUM} s: (.*)\.", line):
        assert m[1] == seconds(t["seconds"])
        assert dict(re.findall(rf"(\w+) {NUM} s", m[2])) == {k: seconds(v) for k, v in t["steps"].items()}
    elif m := re.fullmatch(rf"- The analysis wrote (\d+) files from (\d+) checkpoints in {NUM} s\.", line):
        assert m.groups() == (str(len(index["files"])), str(len(index["checkpoints"])), seconds(index["seconds"]))
    elif m := re.fullmatch(rf"- The report embeds (\d+) figures in {NUM} MB\.", line):
        report = src["root"] / "report.html"
        assert m.groups() == (str(report.read_text().count("<img ")), f"{report.stat().st_size / 1e6:.1f}")
    else:
        return False
    return True


def training_row(cells: list[str], src: dict) -> None:
    run = src["runs"][cells[0]]
    s = run["summary"]
    speed = [json.loads(x)["images_per_second"] for x in (run["dir"] / "metrics.jsonl").read_text().splitlines()]
    assert cells[1] == s["task"] and f"{s['epochs']} epochs" in cells[3]
    assert cells[4:] == [f"{pct(s['test_accuracy'])}%", f"{pct(s['best_val_accuracy'])}% (epoch {s['best_epoch']})",
                         f"{min(speed):.0f}-{max(speed):.0f}", f"{s['train_seconds']:.0f} / {s['wall_seconds']:.0f}"]


def probes_of(src: dict, run: str) -> dict[tuple[str, str], str]:
    probes = json.loads((src["runs"][run]["dir"] / "probes.json").read_text())
    return {(stage, p): pct(v[f"{p}_accuracy"]) for stage, v in probes["stages"].items() for p in PROBES}


def probe_row(cells: list[str], src: dict) -> None:
    values = probes_of(src, cells[0])
    assert [c.rstrip("%") for c in cells[2:]] == [values[(cells[1], p)] for p in PROBES]


def probes(line: str, src: dict) -> bool:
    if m := re.match(rf"\*\*Probes\*\* .*\(chance {NUM}%\)$", line):
        chance = {json.loads((r["dir"] / "probes.json").read_text())["chance"] for r in src["runs"].values()}
        assert {pct(c) for c in chance} == {m[1]}
    elif m := re.fullmatch(rf"- Stage (\d+), linear probe: the (\w+) network .* the (\w+) network \({NUM}% vs {NUM}%\)\.",
                           line):
        assert (m[4], m[5]) == (probes_of(src, m[2])[(m[1], "linear")], probes_of(src, m[3])[(m[1], "linear")])
    elif m := re.fullmatch(rf"- The (\w+) network's best probe: (\w+) at stage (\d+) \({NUM}%\)\.", line):
        values = {k: float(v) for k, v in probes_of(src, m[1]).items()}
        assert pct(values[(m[3], PROBE_KEY[m[2]])] / 100) == m[4] and (m[3], PROBE_KEY[m[2]]) in best(values, False)
    else:
        return False
    return True


def sweep_row(cells: list[str], src: dict) -> None:
    t = src["trials"][cells[0]]
    test = f"{pct(float(t['test_accuracy']))}%" if t["test_accuracy"] else "-"
    assert cells[-4:-1] == [t["epochs"], f"{pct(float(t['best_val_accuracy']))}%", test]
    assert cells[-1] == ("finished" if t["status"] == "completed" else t["stop_reason"])


def val_curve(src: dict, trial: dict) -> list[float]:
    lines = (src["sweep"] / "trials" / trial["run"] / "metrics.jsonl").read_text().splitlines()
    return [float(pct(json.loads(x)["val_accuracy"])) for x in lines]


def sweep(line: str, src: dict) -> bool:
    trials = src["trials"]
    val = {i: float(pct(float(t["best_val_accuracy"]))) for i, t in trials.items()}
    if m := re.fullmatch(r"\*\*Sweep\*\* `(\w+)`: (\d+) trials", line):
        assert (m[1], int(m[2])) == (src["sweep"].name, len(trials))
    elif m := re.fullmatch(rf"- The best trial, (\d+), reaches {NUM}% validation(?: and {NUM}% test)? accuracy"
                           rf"(?:; the others (.*) validation)?\.", line):
        assert m[1] in best(val, False) and float(m[2]) == val[m[1]]
        assert m[3] == (pct(float(trials[m[1]]["test_accuracy"])) if trials[m[1]]["test_accuracy"] else None)
        others = sorted((v for i, v in val.items() if i != m[1]), reverse=True)
        assert [float(x) for x in re.findall(NUM, m[4] or "")] == others
    elif m := re.fullmatch(r"- ASHA stopped (\d+) of the (\d+) trials; the trials trained (\d+) of the (\d+) epochs "
                           r"planned\.", line):
        assert [int(x) for x in m.groups()] == [sum(t["status"] == "early_stopped" for t in trials.values()),
                                                len(trials), sum(int(t["epochs"]) for t in trials.values()),
                                                sum(int(t["planned_epochs"]) for t in trials.values())]
    elif line.startswith("- Validation accuracy"):
        drops = {i: [(a - b, e + 1) for e, (a, b) in enumerate(zip(c, c[1:])) if a > b]
                 for i, c in ((i, val_curve(src, t)) for i, t in trials.items())}
        drops = {i: max(d) for i, d in drops.items() if d}
        if not drops:
            assert line == "- Validation accuracy never falls from one epoch to the next in any trial."
            return True
        m = re.fullmatch(rf"- Validation accuracy falls from one epoch to the next in (\d+) of the (\d+) trials, by "
                         rf"at most {NUM} points \(trial (\d+), epoch (\d+) to (\d+)\)\.", line)
        points, epoch = drops[m[4]]
        assert (int(m[1]), int(m[2])) == (len(drops), len(trials)) and points == max(drops.values())[0]
        assert (m[3], int(m[5]), int(m[6])) == (f"{points:.1f}", epoch, epoch + 1)
    else:
        return False
    return True


def faithful_row(cells: list[str], columns: list[str], src: dict) -> None:
    for column, value in zip(columns[1:], cells[1:]):
        run, epoch, mode = re.match(r"(\w+), epoch (\d+): (\w+)", column).groups()
        assert value == area(src["analysis"][("faithfulness", run, int(epoch))][f"{mode}_auc_{MAP_KEY[cells[0]]}"])


def faithfulness(line: str, src: dict) -> bool:
    a = src["analysis"]
    if m := re.match(r"\*\*Faithfulness\*\* of the saliency maps \((\d+) test images, (\w+) fill", line):
        assert {(r["images"], r["fill"]) for (k, *_), r in a.items() if k == "faithfulness"} == {(int(m[1]), m[2])}
    elif m := re.fullmatch(rf"- (\w+) network, epoch (\d+): (.+) deletes best \({NUM}\) and (.+) inserts best "
                           rf"\({NUM}\)\.", line):
        r = a[("faithfulness", m[1].lower(), int(m[2]))]
        for words, value, mode in ((m[3], m[4], "deletion"), (m[5], m[6], "insertion")):
            values = {k: float(area(r[f"{mode}_auc_{k}"])) for k in MAPS}
            assert value == area(r[f"{mode}_auc_{MAP_KEY[words]}"]) and MAP_KEY[words] in best(values, mode == "deletion")
    elif m := re.fullmatch(r"- (\w+) network, epoch (\d+), (deletion|insertion) \((?:lower|higher) is better\): "
                           r"(.*the random map.*)\.", line):
        r = a[("faithfulness", m[1].lower(), int(m[2]))]
        said = re.findall(rf"(.+?) (?:beats|loses to|ties with) the random map \({NUM} vs {NUM}\)(?:; |$)", m[4])
        assert {MAP_KEY[w] for w, _, _ in said} == set(MAPS) - {"random"}
        for words, value, random in said:
            assert (value, random) == (area(r[f"{m[3]}_auc_{MAP_KEY[words]}"]), area(r[f"{m[3]}_auc_random"]))
    elif m := re.fullmatch(r"- (\w+) network, epoch (\d+) to (\d+), (deletion|insertion): the area (.*)\.", line):
        first, last = (a[("faithfulness", m[1].lower(), int(e))] for e in (m[2], m[3]))
        seen = set()
        for move, items in re.findall(r"(grows|shrinks|stays) for (.*?)(?=; grows|; shrinks|; stays|$)", m[5]):
            for words, x, y in re.findall(rf"(.+?) {NUM} -> {NUM}(?:, |$)", items):
                key = MAP_KEY[words]
                assert (x, y) == (area(first[f"{m[4]}_auc_{key}"]), area(last[f"{m[4]}_auc_{key}"]))
                assert move == ("grows" if float(y) > float(x) else "shrinks" if float(y) < float(x) else "stays")
                seen.add(key)
        assert seen == set(MAPS)
    else:
        return False
    return True


def depth(line: str, src: dict) -> bool:
    m = re.fullmatch(r"- (\w+) network, epoch (\d+), Grad-CAM by stage, (deletion|insertion) \((lower|higher) is "
                     r"better\): most faithful at stage (\d+) \((.*)\)\.", line)
    if not m:
        return False
    r = src["analysis"][("gradcam_depth", m[1].lower(), int(m[2]))]
    values = stages(m[6])
    assert {s: area(v) for s, v in values.items()} == {s: area(r[f"{m[3]}_auc_stage{s}"]) for s in values}
    assert len(values) == sum(k.startswith(f"{m[3]}_auc_stage") for k in r) and m[5] in best(values, m[4] == "lower")
    return True


def cka_values(src: dict, ea: str, eb: str) -> dict[str, str]:
    """Stage -> CKA of the stage with itself: the last epochs' matrix, or a common epoch's."""
    sim = src["similarity"]
    if [int(ea), int(eb)] == sim["epochs"]:
        return {s.removeprefix("layer"): area(sim["matrix"][i][sim["cols"].index(s)]) for i, s in enumerate(sim["rows"])}
    assert ea == eb
    return {s.removeprefix("layer"): area(v) for s, v in sim["per_epoch"][ea].items()}


def cka_row(cells: list[str], columns: list[str], src: dict) -> None:
    ea, eb = re.fullmatch(r"\w+ epoch (\d+) vs \w+ epoch (\d+)", cells[0]).groups()
    values = cka_values(src, ea, eb)
    assert cells[1:] == [values[c.removeprefix("stage ")] for c in columns[1:]]


def cka(line: str, src: dict) -> bool:
    sim = src["similarity"]
    last = cka_values(src, *map(str, sim["epochs"]))
    if m := re.fullmatch(r"- (\w+) epoch (\d+) vs (\w+) epoch (\d+): most alike at stage (\d+) \((.*)\)\.", line):
        assert [m[1].lower(), m[3]] == sim["runs"] and [int(m[2]), int(m[4])] == sim["epochs"]
        values = stages(m[6])
        assert {s: area(v) for s, v in values.items()} == last and m[5] in best(values, False)
    elif m := re.fullmatch(rf"- At epochs? ([\d, ]+) each stage's CKA is within {NUM} of its value at .*\.", line):
        epochs = [e for e in m[1].split(", ")]
        assert set(epochs) == set(sim["per_epoch"]) - ({str(sim["epochs"][0])} if len(set(sim["epochs"])) == 1 else set())
        gap = max(abs(float(area(v)) - float(last[s.removeprefix("layer")]))
                  for e in epochs for s, v in sim["per_epoch"][e].items())
        assert m[2] == f"{gap:.3f}"
    else:
        return False
    return True


LINES = (header, timings, probes, sweep, faithfulness, depth, cka)


def check_table(lines: list[str], src: dict) -> None:
    columns = [c.strip() for c in lines[0].strip("|").split("|")]
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == len(columns), line
        if columns[0] == "map":
            faithful_row(cells, columns, src)
        elif columns[0] == "epochs":
            cka_row(cells, columns, src)
        elif columns[0] == "trial":
            sweep_row(cells, src)
        else:
            {"task": training_row, "stage": probe_row}[columns[1]](cells, src)


def check_block(root: Path, block: str) -> None:
    """Every table row and every line with a number agrees with the demo's files."""
    src = load(Path(root))
    lines = block.splitlines()
    unchecked = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("|"):
            end = next((j for j in range(i, len(lines)) if not lines[j].startswith("|")), len(lines))
            check_table(lines[i:end], src)
            i = end
            continue
        check_words(lines[i])
        if not any(check(lines[i], src) for check in LINES) and re.search(r"\d", lines[i]):
            unchecked.append(lines[i])
        i += 1
    assert not unchecked, "lines no check recognised:\n" + "\n".join(unchecked)
    assert sum(line.startswith("|") for line in lines) >= 20  # the tables are there
