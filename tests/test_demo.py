"""The demo pipeline end to end at reduced size: both networks, probes, sweep, analysis, report."""
import json
from pathlib import Path

import pytest

from convlens.specs.load import load_job
from convlens.demo import run_demo

REPO = Path(__file__).resolve().parents[1]
TINY = {"data.train_subset": 768, "data.test_subset": 256, "model.layers": [1, 1], "model.width": 8,
        "run.workers": 1, "run.quiet": True}


def test_demo_end_to_end_at_reduced_size(ray_cluster, tmp_path, cache_dir):
    job = load_job("jobs/demo.yaml", [f"root={tmp_path / 'demo'}", "quiet=true"])
    for step, epochs in ((job.supervised, 2), (job.rotation, 2)):
        step.overrides.update(TINY, **{"run.epochs": epochs, "data.cache_dir": cache_dir})
    job.probes.overrides.update({"stages": [1, 2], "max_train": 512, "probe_epochs": 2})
    job.sweep.overrides.update({"base_overrides": {**TINY, "run.epochs": 3, "data.cache_dir": cache_dir,
                                                   "run.steps_per_epoch": 4}, "num_samples": 2})
    job.analysis.overrides.update({"epochs": [1, "last"], "options": {"num_images": 32, "num_train": 128,
                                                                      "inversion_steps": 5, "tsne_points": 60}})
    report = run_demo(job)
    html = report.read_text()
    assert report.name == "report.html" and "<img" in html and "http://" not in html
    root = tmp_path / "demo"
    for run in ("supervised", "rotation"):
        assert json.loads((root / run / "summary.json").read_text())["epochs"] == 2
        assert (root / run / "probes.json").is_file()
    index = json.loads((root / "analysis" / "index.json").read_text())
    figures = [f for f in index["files"] if f["file"].endswith(".png")]
    assert {f["method"] for f in figures} >= {"cam", "gradcam", "deconv", "knn", "embeddings", "compare"}
    assert html.count("<img ") >= len(figures) + 4  # every analysis figure, and both runs' curves


def test_demo_refuses_analysis_epochs_that_training_deletes(monkeypatch, tmp_path):
    from convlens.errors import ConfigError
    from convlens.specs.load import load_job
    from convlens.demo import run_demo
    monkeypatch.chdir(REPO)
    job = load_job(REPO / "jobs/demo.yaml", [f"root={tmp_path}"], "demo")
    job.supervised.overrides["run.keep_last"] = 2
    with pytest.raises(ConfigError, match=r"supervised keeps only its last 2 of 5 epochs \(run.keep_last\), "
                                          r"not epoch 1; set supervised.overrides.run.keep_last to 5"):
        run_demo(job)
    assert not list(tmp_path.iterdir())  # refused before any step ran
