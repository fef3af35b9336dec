"""`convlens report`: one self-contained HTML page from run, sweep and analysis folders.

Every figure is embedded as a base64 data URI and all CSS is inline, so the page opens
offline and can be mailed or attached as one file. A folder is recognised by what it
holds: summary.json (a training run), trials.csv (a sweep), index.json (an analysis).
"""
from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path

import yaml

from convlens.errors import ConfigError

SKIP_DIRS = ("checkpoint_epoch", "best_epoch", "wandb", ".")

METHODS = {  # method key -> (title, one-line explanation)
    "filters": ("First-layer filters", "The learned convolution kernels of the first layer drawn as small "
                "images: on natural images they become edge, colour and frequency detectors."),
    "feature_maps": ("Feature maps", "Activations of chosen channels for one input at several depths: early "
                     "maps keep the image layout, later ones respond to larger, more abstract parts."),
    "deconvnet": ("Deconvnet projections", "Zeiler & Fergus: the strongest activation of a unit is projected back "
                  "to pixels through transposed convolutions and ReLUs, showing the pattern it responds to."),
    "inversion": ("Feature inversion", "Mahendran & Vedaldi: an image optimised from noise so that its features "
                  "match those of a real image (with a smoothness prior) shows what the layer keeps."),
    "cam": ("Class activation maps (CAM)", "Zhou et al.: the last-stage feature maps weighted by the classifier "
            "weights of one class, upsampled to the image: where the evidence for that class lies."),
    "gradcam": ("Grad-CAM", "Selvaraju et al.: feature maps weighted by the spatially averaged gradient of the "
                "class score; works for any layer, and equals CAM at the last stage of a GAP network."),
    "guided_backprop": ("Guided backpropagation", "Springenberg et al.: the input gradient with negative gradients "
                        "stopped at every ReLU, giving sharp but class-insensitive pixel patterns."),
    "guided_gradcam": ("Guided Grad-CAM", "The pointwise product of guided backpropagation and the upsampled "
                       "Grad-CAM map: fine pixel detail restricted to the class-discriminative region."),
    "embeddings": ("Embeddings (t-SNE / PCA)", "Pooled penultimate features of test images projected to 2-D: PCA keeps "
                   "global linear structure, t-SNE keeps neighbourhoods; well-separated clusters mean easy classes."),
    "knn": ("k-nearest-neighbour evaluation", "A weighted kNN classifier on normalised features: how good the "
            "representation is without training a new head (the standard probe for self-supervised features)."),
    "extremes": ("Hardest and easiest images", "Test images ranked by the loss of their true class: the easiest show "
                 "prototypes, the hardest show label noise, ambiguous classes and blind spots."),
    "confusion": ("Confusion matrix", "Row = true class, column = predicted class; off-diagonal mass shows which "
                  "classes the network mixes up (e.g. shirt, T-shirt and pullover)."),
    "compare": ("Supervised vs. rotation features", "The same analysis on a supervised network and on one "
                "pre-trained to predict image rotation: what a pretext task learns without labels."),
}
ALIASES = {"feature_map": "feature_maps", "features": "feature_maps", "deconv": "deconvnet",
           "grad_cam": "gradcam", "guided_grad_cam": "guided_gradcam", "guided": "guided_backprop",
           "guidedbackprop": "guided_backprop", "tsne": "embeddings", "pca": "embeddings",
           "embedding": "embeddings", "hardest": "extremes", "easiest": "extremes",
           "hardest_easiest": "extremes", "confusion_matrix": "confusion", "filter": "filters"}

CSS = """
body{font:16px/1.55 Georgia,'Times New Roman',serif;color:#222;max-width:60rem;margin:2rem auto;padding:0 1rem}
h1,h2,h3{font-family:Helvetica,Arial,sans-serif;line-height:1.2}h2{border-bottom:2px solid #ddd;margin-top:2.5rem}
table{border-collapse:collapse;margin:.8rem 0;font:14px Helvetica,Arial,sans-serif}
td,th{border:1px solid #ccc;padding:.25rem .55rem;text-align:left}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:.5rem;vertical-align:top;max-width:100%}
figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:13px;color:#555;max-width:28rem}
.bar{display:inline-block;height:.7rem;background:#4a7ab5;vertical-align:middle;margin-right:.4rem}
.note{background:#f7f7f2;border-left:4px solid #c9b458;padding:.6rem 1rem}
pre{background:#f6f6f6;padding:.6rem;overflow:auto;font-size:12px}math{font-size:1.1em}
nav a{margin-right:1rem}
"""

# Marks the page once every image decoded, so a headless browser can check the embedding.
ONLOAD = """<script>window.addEventListener('load',function(){var i=document.images,n=0;
for(var k=0;k<i.length;k++){if(i[k].complete&&i[k].naturalWidth>0)n++;}
document.body.dataset.imagesOk=n+'/'+i.length;});</script>"""


def write_report(paths, out=None) -> Path:
    """Write one HTML report of every run/sweep/analysis folder under `paths`; returns its path."""
    paths = [Path(p).expanduser() for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    for p in paths:
        if not p.is_dir():
            raise ConfigError(f"report: {p} is not a folder")
    found = discover(paths)
    if not any(found.values()):
        raise ConfigError(f"report: no run (summary.json), sweep (trials.csv) or analysis "
                                f"(index.json) folder under {', '.join(map(str, paths))}")
    out = Path(out) if out else paths[0] / "report.html"
    print(f"[convlens] report: {len(found['runs'])} run(s), {len(found['sweeps'])} sweep(s), "
          f"{len(found['analyses'])} analysis folder(s)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    page = render(found)
    out.write_text(page, encoding="utf-8")
    print(f"[convlens] report: {page.count('<img ')} figures embedded, {out.stat().st_size / 1e6:.1f} MB",
          flush=True)
    return out


def discover(paths: list[Path]) -> dict[str, list[Path]]:
    """Run, sweep and analysis folders under paths; a sweep's trial runs stay in its table
    unless named themselves."""
    found = {"runs": [], "sweeps": [], "analyses": []}
    paths = [p.resolve() for p in paths]
    for root in paths:
        for folder in [root, *sorted(walk(root))]:
            for kind, marker in (("runs", "summary.json"), ("sweeps", "trials.csv"), ("analyses", "index.json")):
                if (folder / marker).is_file() and folder not in found[kind]:
                    found[kind].append(folder)
    found["runs"] = [r for r in found["runs"]
                     if r in paths or not any(r.is_relative_to(s) for s in found["sweeps"])]
    return found


def walk(root: Path, depth: int = 3):
    if depth == 0:
        return
    for child in root.iterdir():
        if child.is_dir() and not child.name.startswith(SKIP_DIRS):
            yield child
            yield from walk(child, depth - 1)


def render(found: dict[str, list[Path]]) -> str:
    runs = sorted((load_run(d) for d in found["runs"]),  # supervised first, then pretext runs
                  key=lambda r: (r["summary"].get("task") != "supervised", str(r["dir"])))
    body = [intro(found), loss_section()]
    for run in runs:
        print(f"[convlens] report: run {run['summary'].get('run', run['dir'].name)}", flush=True)
        body.append(run_section(run))
    if {r["summary"].get("task") for r in runs} >= {"supervised", "rotation"}:
        body.append(comparison_section(runs))
    for folder in found["sweeps"]:
        print(f"[convlens] report: sweep {folder.name}", flush=True)
        body.append(sweep_section(folder))
    for folder in found["analyses"]:
        print(f"[convlens] report: analysis {folder.name}", flush=True)
        body.append(analysis_section(folder))
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<title>convlens report</title><style>{CSS}</style>{ONLOAD}</head>"
            f"<body>{''.join(body)}</body></html>\n")


# ---- building blocks -------------------------------------------------------------------

def esc(value) -> str:
    return html.escape(str(value), quote=True)


def img(path: Path, caption: str = "", width: str = "") -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    mime = "image/jpeg" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "image/png"
    style = f" style='width:{width}'" if width else ""
    return (f"<figure{style}><img alt='{esc(caption or Path(path).name)}' src='data:{mime};base64,{data}'>"
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return esc(value)


def table(columns: list[str], rows: list[list], bars: int | None = None) -> str:
    """An HTML table; the first column is a label, numbers right-aligned; column `bars` (in [0, 1]) gets a bar."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            num = as_number(v) if i > 0 else None
            bar = (f"<span class='bar' style='width:{max(0.0, min(1.0, num)) * 6:.2f}rem'></span>"
                   if i == bars and num is not None else "")
            cells.append(f"<td class='num'>{bar}{fmt(num)}</td>" if num is not None else f"<td>{esc(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def as_number(v) -> float | int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    try:
        return float(v) if v not in ("", None) else None
    except (TypeError, ValueError):
        return None


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return (rows[0], rows[1:]) if rows else ([], [])


# ---- sections --------------------------------------------------------------------------

def intro(found: dict[str, list[Path]]) -> str:
    links = [("loss", "The loss")] + [(anchor(d), f"Run {d.name}") for d in found["runs"]]
    links += [(anchor(d), f"Sweep {d.name}") for d in found["sweeps"]]
    links += [(anchor(d), f"Analysis {d.name}") for d in found["analyses"]]
    nav = "".join(f"<a href='#{a}'>{esc(t)}</a>" for a, t in links)
    return ("<h1>Looking inside convolutional networks</h1>"
            "<p>Training runs, hyper-parameter sweeps and visualisations of what the networks learned, "
            "produced by <code>convlens</code>. Every figure below is embedded in this single file.</p>"
            f"<nav>{nav}</nav>")


def anchor(folder: Path) -> str:
    return "s-" + "".join(c if c.isalnum() else "-" for c in str(folder))[-60:]


def loss_section() -> str:
    softmax = ("<mrow><msub><mi>p</mi><mi>k</mi></msub><mo>=</mo><mfrac><msup><mi>e</mi><msub><mi>z</mi>"
               "<mi>k</mi></msub></msup><mrow><munderover><mo>&#x2211;</mo><mrow><mi>j</mi><mo>=</mo><mn>1</mn>"
               "</mrow><mi>K</mi></munderover><msup><mi>e</mi><msub><mi>z</mi><mi>j</mi></msub></msup></mrow>"
               "</mfrac></mrow>")
    ce = ("<mrow><mi>L</mi><mo>=</mo><mo>&#x2212;</mo><mfrac><mn>1</mn><mi>N</mi></mfrac><munderover>"
          "<mo>&#x2211;</mo><mrow><mi>i</mi><mo>=</mo><mn>1</mn></mrow><mi>N</mi></munderover><mi>log</mi>"
          "<mo>&#x2061;</mo><msub><mi>p</mi><msub><mi>y</mi><mi>i</mi></msub></msub><mo>(</mo><msub><mi>x</mi>"
          "<mi>i</mi></msub><mo>)</mo></mrow>")
    return ("<h2 id='loss'>The loss: cross-entropy</h2>"
            "<p>The network maps an image <i>x</i> to <i>K</i> scores (logits) <i>z</i>; the softmax turns them "
            "into class probabilities, and training minimises the mean cross-entropy between the one-hot "
            "label <i>y</i> and those probabilities:</p>"
            f"<p><math display='block'>{softmax}</math></p><p><math display='block'>{ce}</math></p>"
            "<p><b>Interpretation.</b> The loss is the average negative log-probability the model gives to the "
            "correct class: its surprise, in nats, at the true label. A confident correct prediction costs "
            "almost nothing, a confident wrong one costs a lot. Guessing uniformly gives ln&#8201;K "
            "(2.30 for 10 classes, 1.39 for the 4 rotations), and <i>e</i><sup>&#x2212;L</sup> is the geometric "
            "mean of the probability assigned to the right answer (L&#8201;=&#8201;0.3 means about 0.74). "
            "Minimising it is maximum-likelihood estimation; accuracy only counts the arg-max, so the loss can "
            "rise (over-confident mistakes) while accuracy still improves, which is the usual first sign of "
            "over-fitting on the validation curve.</p>")


def load_run(folder: Path) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    config = yaml.safe_load((folder / "config.yaml").read_text()) if (folder / "config.yaml").is_file() else {}
    return {"dir": folder, "summary": summary, "config": config or {}}


def setup_rows(cfg: dict, summary: dict) -> list[list]:
    run, data, model = cfg.get("run", {}), cfg.get("data", {}), cfg.get("model", {})
    optim, sched = cfg.get("optim", {}), cfg.get("schedule", {})
    rows = [["task", summary.get("task", run.get("task", "?"))],
            ["dataset", f"{data.get('dataset', summary.get('dataset', '?'))}"
                        f" (train subset {data.get('train_subset') or 'all'}, val fraction {data.get('val_fraction')})"],
            ["model", f"ResNet, {model.get('block')} blocks {model.get('layers')}, width {model.get('width')}, "
                      f"{model.get('stem')} stem"],
            ["optimiser", f"{optim.get('name')} lr {optim.get('lr')}, momentum {optim.get('momentum')}, "
                          f"weight decay {optim.get('weight_decay')}"],
            ["schedule", f"{sched.get('name')} {sched.get('milestones') or ''}"],
            ["batch / epochs / workers", f"{data.get('batch_size')} / {summary.get('epochs')} / "
                                         f"{summary.get('workers', run.get('workers'))}"],
            ["augmentation", f"crop padding {data.get('crop_padding')}, flip {data.get('flip')}"]]
    return rows


def run_section(run: dict) -> str:
    folder, s = run["dir"], run["summary"]
    name = s.get("run", folder.name)
    parts = [f"<h2 id='{anchor(folder)}'>Run {esc(name)}</h2>",
             f"<p>Folder <code>{esc(folder)}</code>. Best validation accuracy "
             f"<b>{fmt(s.get('best_val_accuracy'))}</b> at epoch {esc(s.get('best_epoch'))} of "
             f"{esc(s.get('epochs'))}; that checkpoint scores <b>{fmt(s.get('test_accuracy'))}</b> on the test "
             f"set (test loss {fmt(s.get('test_loss', float('nan')))}); wall time "
             f"{duration(float(s.get('wall_seconds', 0)))}.</p>",
             "<h3>Setup</h3>", table(["", "value"], setup_rows(run["config"], s))]
    if run["config"]:
        parts.append("<details><summary>Full config.yaml</summary><pre>"
                     f"{esc(yaml.safe_dump(run['config'], sort_keys=False))}</pre></details>")
    curves = [(folder / f"{m}.png", f"{m}: train vs. validation per epoch") for m in ("loss", "accuracy")]
    if any(p.is_file() for p, _ in curves):
        parts += ["<h3>Learning curves</h3>"] + [img(p, c, "26rem") for p, c in curves if p.is_file()]
    if (folder / "per_class.csv").is_file():
        cols, rows = read_csv(folder / "per_class.csv")
        parts += ["<h3>Per-class accuracy</h3><p>Validation accuracy at the best epoch and test accuracy of "
                  "the best checkpoint, per class.</p>", table(cols, rows, bars=len(cols) - 1)]
    return "".join(parts)


def comparison_section(runs: list[dict]) -> str:
    rows = [[r["summary"].get("run"), r["summary"].get("task"), r["summary"].get("best_val_accuracy"),
             r["summary"].get("test_accuracy"), r["summary"].get("epochs")] for r in runs]
    return ("<h2 id='compare'>Supervised vs. rotation pre-training</h2>"
            "<p>The supervised network is trained on the class labels. The rotation network never sees a "
            "label: each image is rotated by 0, 90, 180 or 270 degrees and the network predicts which "
            "(a 4-way task, chance 0.25, Gidaris et al. 2018). Its accuracy is on that pretext task and is not "
            "comparable with the class accuracy; what matters is whether its features separate the classes, "
            "which the kNN and embedding figures of the analysis measure on the same footing.</p>"
            + table(["run", "task", "best val accuracy", "test accuracy", "epochs"], rows))


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
    cols, rows = read_csv(folder / "trials.csv")
    parts = [f"<h2 id='{anchor(folder)}'>Sweep {esc(folder.name)}</h2>",
             f"<p>{len(rows)} trials from <code>{esc(folder)}</code>. Each row is one training run with the "
             f"sampled hyper-parameters and its final score.</p>", trials_table(cols, rows)]
    best = best_row(cols, rows)
    if best:
        metric, row = best
        parts += [f"<h3>Best configuration (by {esc(metric)})</h3>",
                  table(["parameter", "value"], [[c, v] for c, v in zip(cols, row)])]
    for name in ("best_job.yaml", "best.json", "best_config.json", "best.yaml", "best_config.yaml"):
        if (folder / name).is_file():
            parts.append(f"<details><summary>{esc(name)}</summary><pre>{esc((folder / name).read_text())}"
                         "</pre></details>")
    parts += [img(p, p.stem.replace("_", " ")) for p in sorted(folder.glob("*.png"))]
    return "".join(parts)


def trials_table(cols: list[str], rows: list[list[str]]) -> str:
    """trials.csv without its paths, the sampled values under their own field names."""
    keep = [i for i, c in enumerate(cols) if c not in ("run", "run_dir", "best")
            and (c != "stop_reason" or any(r[i] for r in rows))]
    return table([cols[i].removeprefix("config/") for i in keep], [[r[i] for i in keep] for r in rows])


def method_key(method: str) -> str:
    key = method.lower().replace("-", "_").replace(" ", "_")
    return ALIASES.get(key, key)


def read_index(folder: Path) -> list[dict]:
    """The PNG entries of the index.json `convlens analyze` writes (its JSON numbers stay out)."""
    index = json.loads((folder / "index.json").read_text())
    return [e for e in index["files"] if e["file"].endswith(".png") and (folder / e["file"]).is_file()]


def analysis_section(folder: Path) -> str:
    entries = read_index(folder)
    groups: dict[str, list[dict]] = {}
    for e in entries:
        groups.setdefault(method_key(e.get("method", "other")), []).append(e)
    order = [k for k in METHODS if k in groups] + sorted(k for k in groups if k not in METHODS)
    parts = [f"<h2 id='{anchor(folder)}'>Analysis {esc(folder.name)}</h2>",
             f"<p>{len(entries)} figures from <code>{esc(folder)}</code>, grouped by method.</p>"]
    for key in order:
        title, why = METHODS.get(key, (key.replace("_", " ").capitalize(), ""))
        parts.append(f"<h3>{esc(title)}</h3><p>{esc(why)}</p>")
        if key == next((k for k in ("cam", "gradcam") if k in groups), None):
            parts.append(cam_note())  # once, under the first of the two
        for e in groups[key]:
            caption = e.get("caption", "") + (f" [{Path(e['checkpoint']).name}]" if e.get("checkpoint") else "")
            parts.append(img(folder / e["file"], caption, "28rem"))
    return "".join(parts)


def cam_note() -> str:
    return ("<p class='note'><b>Why CAM works on a ResNet.</b> The last stage gives <i>K</i> feature maps "
            "<i>f<sub>k</sub></i>(<i>x</i>,<i>y</i>); global average pooling turns each into one number and the "
            "fully connected layer scores class <i>c</i> as <i>s<sub>c</sub></i> = &#x2211;<sub><i>k</i></sub> "
            "<i>w<sub>ck</sub></i> &#183; (1/<i>HW</i>) &#x2211;<sub><i>x</i>,<i>y</i></sub> "
            "<i>f<sub>k</sub></i>(<i>x</i>,<i>y</i>) + <i>b<sub>c</sub></i>. Both operations are linear, so the "
            "sums can be swapped: <i>s<sub>c</sub></i> = (1/<i>HW</i>) &#x2211;<sub><i>x</i>,<i>y</i></sub> "
            "<i>M<sub>c</sub></i>(<i>x</i>,<i>y</i>) + <i>b<sub>c</sub></i> with <i>M<sub>c</sub></i> = "
            "&#x2211;<sub><i>k</i></sub> <i>w<sub>ck</sub></i> <i>f<sub>k</sub></i>. The class activation map "
            "<i>M<sub>c</sub></i> is a weighted sum of the feature maps whose average <em>is</em> the class score, "
            "so each location's share of the evidence can be read off directly, with no extra training. The "
            "gradient of <i>s<sub>c</sub></i> with respect to <i>f<sub>k</sub></i>(<i>x</i>,<i>y</i>) is "
            "<i>w<sub>ck</sub></i>/<i>HW</i> everywhere, so Grad-CAM at this layer gives the same map up to "
            "scale.</p>")
