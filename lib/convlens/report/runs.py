"""Training runs: the loss explained once and a section per run."""
from __future__ import annotations

from pathlib import Path

import yaml

from convlens.report.html import anchor, duration, esc, fmt, img, read_csv, table
from convlens.storage.rundir import RunDir


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
    run = RunDir(folder)
    config = yaml.safe_load((run / RunDir.CONFIG).read_text()) if (run / RunDir.CONFIG).is_file() else {}
    return {"dir": folder, "summary": run.read_summary(), "config": config or {}}


def augmentation(data: dict) -> str:
    """The run's training augmentation in words: the set parts only."""
    parts = [f"crop padding {data.get('crop_padding')}", f"flip {data.get('flip')}"]
    if data.get("random_resized_crop"):
        parts.append(f"random resized crop {data['random_resized_crop']}")
    if data.get("color_jitter"):
        parts.append(f"colour jitter {data['color_jitter']}")
    if data.get("resize"):
        parts.append(f"resized to {data['resize']} px")
    return ", ".join(parts)


def setup_rows(cfg: dict, summary: dict, folder: Path) -> list[list]:
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
            ["augmentation", augmentation(data)]]
    if summary.get("wandb_run_id"):
        rows.append(["W&B run", summary.get("wandb_url") or f"{summary['wandb_run_id']} (offline: "
                                f"`convlens sync {folder}` uploads it)"])
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
             "<h3>Setup</h3>", table(["", "value"], setup_rows(run["config"], s, run["dir"]))]
    if run["config"]:
        parts.append(f"<details><summary>Full {RunDir.CONFIG}</summary><pre>"
                     f"{esc(yaml.safe_dump(run['config'], sort_keys=False))}</pre></details>")
    curves = [(folder / name, f"{Path(name).stem}: train vs. validation per epoch") for name in RunDir.CURVES]
    if any(p.is_file() for p, _ in curves):
        parts += ["<h3>Learning curves</h3>"] + [img(p, c, "26rem") for p, c in curves if p.is_file()]
    if (folder / RunDir.PER_CLASS).is_file():
        cols, rows = read_csv(folder / RunDir.PER_CLASS)
        parts += ["<h3>Per-class accuracy</h3><p>Validation accuracy at the best epoch and test accuracy of "
                  "the best checkpoint, per class.</p>", table(cols, rows, bars=len(cols) - 1)]
    return "".join(parts)
