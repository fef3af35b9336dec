"""The HTML report: built from the reduced demo's real runs, opened in headless Chromium, fully offline."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import CHROMIUM, require
from convlens.analysis import compare, similarity
from convlens.analysis.registry import load_all, names
from convlens.report.html import esc

METHOD_FIGURES = [*names(), compare.NAME, similarity.NAME]  # every registered method, and the post-steps'
SUP, ROT = "supervised", "rotation"  # the reduced demo's networks (conftest's demo fixture)
FAITH_TABLE = {"columns": ["run", "epoch", "deletion_auc_cam", "insertion_auc_cam", "deletion_auc_stage4"],
               "rows": [[SUP, 1, 0.2125, 0.5575, None], [SUP, 2, 0.1875, 0.625, None]]}


def analysis_dir(folder: Path, checkpoint: str) -> Path:
    """A folder as `convlens analyze` leaves it: a PNG figure and a JSON per method, and
    index.json written by the job's own writer from the registry."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from convlens.analysis.job import write_index
    folder.mkdir(parents=True)
    entries = []
    rng = np.random.default_rng(0)
    for i, method in enumerate(METHOD_FIGURES):
        fig, ax = plt.subplots(figsize=(3, 2.4))
        ax.imshow(rng.random((8, 8)), cmap="viridis")
        ax.set_title(method)
        fig.savefig(folder / f"{i:02d}_{method}.png", dpi=60)
        plt.close(fig)
        entries.append({"file": str(folder / f"{i:02d}_{method}.png"), "run": SUP, "epoch": 1,
                        "checkpoint": checkpoint, "method": method,
                        "caption": f"{method} of the tiny supervised network"})
        entries.append({**entries[-1], "file": str(folder / f"{i:02d}_{method}.json")})  # numbers: not a figure
        (folder / f"{i:02d}_{method}.json").write_text("{}")
    knn = next(e for e in entries if e["method"] == "knn" and e["file"].endswith(".png"))
    shutil.copy(knn["file"], folder / "rot_knn.png")
    entries.append({**knn, "file": str(folder / "rot_knn.png"), "run": ROT, "caption": f"kNN of {ROT}"})
    write_index(folder, "analysis", [(SUP, 1, Path(checkpoint))], names(), entries, seconds=1.0,
                tables={"faithfulness": FAITH_TABLE})
    return folder


def sweep_dir(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "trials.csv").write_text(  # the columns sweep/results.py writes
        "trial_id,run,config/optim.lr,status,stop_reason,epochs,best_epoch,best_val_accuracy,test_accuracy,"
        "wandb_run_id,run_dir,node,best,planned_epochs\n"
        "00001,s_trial_00001,0.1,completed,,4,4,0.78,0.77,12e45678,/r/1,10.0.0.1,True,4\n"
        "00000,s_trial_00000,0.02,completed,,4,3,0.71,0.70,ab3k9x0q,/r/0,10.0.0.1,False,4\n"
        "00002,s_trial_00002,0.5,early_stopped,ASHA stopped it after epoch 1,1,1,0.42,,zz09a1b2,/r/2,10.0.0.2,False,4\n")
    return folder


def chromium(args: list[str], profile: Path, timeout: int = 90) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
             f"--user-data-dir={profile}", "--virtual-time-budget=10000",
             "--run-all-compositor-stages-before-draw"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def trained(demo):
    """The reduced demo's two networks (2 epochs, probed at stages 1 and 2): its folders are read, never written."""
    return [demo.root / SUP, demo.root / ROT]


def test_report_is_one_offline_page_with_every_figure(trained, tmp_path, capsys):
    from convlens.report.page import write_report
    from convlens.storage.checkpoint import best_checkpoint
    analysis = analysis_dir(tmp_path / "analysis", str(best_checkpoint(trained[0])))
    sweep = sweep_dir(tmp_path / "sweep")
    out = write_report([*trained, analysis, sweep], out=tmp_path / "report" / "report.html")

    page = out.read_text()
    assert f"report: run {SUP}" in capsys.readouterr().out
    assert not re.search(r"https?://", page), "the report must not reference the network"
    assert "<script src" not in page and "<link" not in page
    n_img = page.count("<img ")
    # curves of both runs, every analysis figure, rot's kNN, and both kNN figures again side by side
    assert n_img == 2 * 2 + len(METHOD_FIGURES) + 1 + 2
    assert page.count("src='data:image/png;base64,") == n_img
    for title in ("Class activation maps (CAM)", "Guided Grad-CAM", "Embeddings (t-SNE / PCA)",
                  "Supervised vs. rotation pre-training", "Best configuration (by best_val_accuracy)",
                  "Why CAM works on a ResNet", "<math display='block'>", "Per-class accuracy"):
        assert title in page
    assert page.count("Why CAM works on a ResNet") == 1
    # every registered method's heading with its explanation, in the registry's order, then compare
    about = [(m.title, m.explanation) for m in load_all().values()] + [
        (step.ABOUT["title"], step.ABOUT["explanation"]) for step in (compare, similarity)]
    where = []
    for title, explanation in about:
        assert title and explanation, title
        section = f"<h3>{esc(title)}</h3><p>{esc(explanation)}</p>"
        assert page.count(section) == 1, section
        where.append(page.index(section))
    assert where == sorted(where)
    assert "<td>T-shirt/top</td>" in page and "<td>270</td>" in page  # per-class rows of both runs
    trials = page[page.index(">Sweep sweep</h2>"):]
    trials = trials[trials.index("<table>"):trials.index("</table>")]
    assert trials.startswith("<table><tr><th>trial_id</th><th>best_val_accuracy</th><th>test_accuracy</th>")
    assert "<td>00001</td>" in trials and "<td>12e45678</td>" in trials  # ids as written, not as numbers
    assert "<tr><td>trial_id</td><td>00001</td></tr>" in page  # the best configuration names its trial
    assert "The trials trained 9 of the 12 epochs planned; early stopping saved 3 (25%)." in page
    nav = page[page.index("<nav>"):page.index("</nav>")]
    assert "<a href='#compare'>Supervised vs. rotation</a>" in nav  # the reader can jump to the comparison
    targets = [page.index(f" id='{a}'") for a in re.findall(r"href='#([^']+)'", nav)]
    assert len(targets) >= 5 and targets == sorted(targets)  # every link lands, in the page's order
    compare_part = page[page.index("<h2 id='compare'>"):page.index("<h2", page.index("<h2 id='compare'>") + 5)]
    probes = re.findall(r"<tr><td>(\d?)</td><td>(\w+)</td>((?:<td class='num'>[-\d.]+</td>){3})</tr>", compare_part)
    assert [(s, n) for s, n, _ in probes] == [("1", SUP), ("1", ROT), ("1", "gap"), ("2", SUP), ("2", ROT),
                                              ("2", "gap"), ("", "chance")], probes
    assert probes[-1][2] == "<td class='num'>0.1000</td>" * 3
    values = {(s, n): [float(v) for v in re.findall(r"[-\d.]+(?=</td>)", cells)] for s, n, cells in probes}
    assert values[("1", "gap")] == pytest.approx([a - b for a, b in zip(values[("1", SUP)], values[("1", ROT)])],
                                                 abs=2e-4)
    assert f"{SUP}, epoch 1: " in compare_part and f"{ROT}, epoch 1: kNN of {ROT}" in compare_part
    faith = page[page.index("<h3>Faithfulness of the saliency maps</h3>"):]
    faith = faith[:faith.index("<h3>", 4)]  # the method's section: its AUC table per epoch, then figures
    assert "<th>deletion auc cam</th><th>insertion auc cam</th></tr>" in faith  # an empty column is left out
    assert f"<td>{SUP} / epoch 2</td><td class='num'>0.1875</td><td class='num'>0.6250</td>" in faith

    require("chromium")
    dom = chromium(["--dump-dom", out.as_uri()], tmp_path / "profile").stdout
    loaded = re.search(r'data-images-ok="(\d+)/(\d+)"', dom)
    assert loaded, "the onload check did not run"
    assert loaded.group(1) == loaded.group(2) == str(n_img)
    shot = tmp_path / "report.png"
    chromium([f"--screenshot={shot}", "--window-size=1100,2600", out.as_uri()], tmp_path / "profile2")
    assert shot.is_file() and shot.stat().st_size > 10_000
    keep = Path(tempfile.gettempdir()) / f"convlens-report-screenshot-{os.getuid()}.png"  # for a person to look at
    shutil.copy(shot, keep)


def test_report_imports_neither_torch_nor_ray_nor_the_analysis():
    """`convlens report` (and --markdown) starts at once: it reads files, and what it says about methods is in
    index.json."""
    code = ("import sys, convlens.cli, convlens.report.page, convlens.report.markdown; "
            "print([m for m in sys.modules if m.split('.')[0] in ('torch', 'ray', 'matplotlib') "
            "or m.startswith('convlens.analysis')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=True)
    assert out.stdout.strip() == "[]"
