"""The demo pipeline end to end at reduced size: both networks, probes, sweep, analysis, report;
then the README's results block written from its files, checked sentence by sentence."""
import json
import uuid
from pathlib import Path

import pytest

from convlens.jobs.demo import run_demo
from convlens.specs.load import load_job
from results_check import check_block

REPO = Path(__file__).resolve().parents[1]
TINY = {"data.train_subset": 768, "data.test_subset": 256, "model.layers": [1, 1], "model.width": 8,
        "run.workers": 1, "run.quiet": True}


@pytest.fixture(scope="module")
def demo(ray_cluster, tmp_path_factory, cache_dir):
    """The reduced demo, run once for this module's tests: (its root, report.html, the W&B API key it saw)."""
    key = "convlens" + uuid.uuid4().hex
    root = tmp_path_factory.mktemp("demo") / "demo"
    job = load_job("jobs/demo.yaml", [f"root={root}", "quiet=true"])
    for step, epochs in ((job.supervised, 2), (job.rotation, 2)):
        step.overrides.update(TINY, **{"run.epochs": epochs, "data.cache_dir": cache_dir})
    job.probes.overrides.update({"stages": [1, 2], "max_train": 512, "probe_epochs": 2})
    job.sweep.overrides.update({"base_overrides": {**TINY, "run.epochs": 4, "data.cache_dir": cache_dir,
                                                   "run.steps_per_epoch": 4}, "num_samples": 2})
    job.analysis.overrides.update({"epochs": [1, "last"], "options": {"num_images": 32, "num_train": 128,
                                                                      "inversion_steps": 5, "tsne_points": 60}})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")  # what the shipped specs say; the suite's default is disabled
        mp.setenv("WANDB_API_KEY", key)
        report = run_demo(job)
    return root, report, key


def test_demo_end_to_end_at_reduced_size(demo):
    root, report, key = demo
    html = report.read_text()
    assert report.name == "report.html" and "<img" in html and "http://" not in html
    for run in ("supervised", "rotation"):
        assert json.loads((root / run / "summary.json").read_text())["epochs"] == 2
        assert (root / run / "probes.json").is_file()
    index = json.loads((root / "analysis" / "index.json").read_text())
    figures = [f for f in index["files"] if f["file"].endswith(".png")]
    assert {f["method"] for f in figures} >= {"cam", "gradcam", "deconv", "knn", "embeddings", "compare"}
    assert html.count("<img ") >= len(figures) + 4  # every analysis figure, and both runs' curves
    timings = json.loads((root / "timings.json").read_text())
    assert list(timings["steps"]) == ["supervised", "rotation", "probes", "sweep", "analysis", "report"]
    assert timings["seconds"] >= sum(timings["steps"].values()) and timings["machine"]["cpus"] >= 1
    check_wandb(root, index, key)


def test_results_block_states_the_demo_numbers(demo, tmp_path, capsys):
    """`convlens report --markdown` on the demo: every sentence's numbers are the files', every word
    that compares them agrees with them; --into puts exactly that block between the README's markers."""
    from convlens.cli import main
    from convlens.report.markdown import BEGIN, END
    root = demo[0]
    assert main(["report", "--markdown", str(root)]) == 0
    block = capsys.readouterr().out
    print(block)
    check_block(root, block)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\ntext before\n{BEGIN}\nold figures\n{END}\ntext after\n")
    assert main(["report", "--markdown", str(root), "--into", str(readme)]) == 0
    expected = block.replace(f"--markdown {root}`", f"--markdown {root} --into {readme}`")
    assert readme.read_text() == f"# title\n\ntext before\n{BEGIN}\n{expected}{END}\ntext after\n"


def check_wandb(root: Path, index: dict, key: str) -> None:
    """What `convlens sync` would upload of the demo: one run per job, all in group "demo"."""
    from convlens.tracking.sync import plan
    from wandb_reader import read_run, read_tables, wait_finished
    chosen, _ = plan(root)
    for seg in chosen:
        wait_finished(seg.folder, seg.run_id)
    logs = {seg.run_id: (seg.folder, read_run(seg.folder / f"run-{seg.run_id}.wandb")) for seg in chosen}
    assert len(logs) == len(chosen)
    print("\nW&B runs of the demo (run, group, job type, history rows, images, tables):")
    for folder, log in logs.values():
        print(f"  {log.config.get('run', {}).get('name') or log.config.get('analysis') or log.config.get('sweep')} "
              f"{log.run_id}: {log.group} {log.job_type} rows {len(log.history)} images "
              f"{sum(len(m['paths']) for m in log.media)} tables {len(log.tables)}")
    by_type = {}
    for _, log in logs.values():
        by_type.setdefault(log.job_type, []).append(log)
    assert {log.group for _, log in logs.values()} == {"demo"}
    trials = [log for log in by_type["train"] if "trial" in log.config]
    assert len(by_type["train"]) == 2 + 2 and len(trials) == 2  # both networks and the two trials
    assert len(by_type["analysis"]) == 2 and len(by_type["probe"]) == 2 and len(by_type["sweep"]) == 1
    train = {log.config["run"]["name"]: log for log in by_type["train"]}
    sup, rot = train["supervised"], train["rotation"]
    assert set(sup.tags) == {"supervised", "fashion_mnist", "resnet-basic-1.1-w8"} and "rotation" in rot.tags
    for log in by_type["train"]:  # every epoch once, in order, with its per-class scalars
        rows = [r for r in log.history if "train/loss" in r]
        assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1)) and rows
        assert all(sum(k.startswith("val/accuracy/") for k in r) in (4, 10) for r in rows)
    for trial in trials:
        assert "optim.lr" in trial.config or "optim.name" in trial.config  # sweep parameters, top level
        assert "test_accuracy" in trial.summary or "ASHA" in trial.summary.get("stop_reason", "")
    sweep = by_type["sweep"][0]
    assert [t["key"] for t in sweep.tables] == ["trials"]
    # lineage: each analysis run uses model-<training run id> at every epoch it read
    ids = {name: log.run_id for name, log in train.items()}
    assert set(index["wandb_run_ids"]) == {"supervised", "rotation"}
    for name, rid in index["wandb_run_ids"].items():
        folder, log = logs[rid]
        assert log.config["train_run_id"] == ids[name]
        read = sorted({f["epoch"] for f in index["files"] if f["run"] == name and f["method"] != "compare"})
        used = sorted(a["metadata"]["epoch"] for a in log.artifacts if a["used"])
        assert used == read and {a["name"] for a in log.artifacts if a["used"]} == {f"model-{ids[name]}"}
        trained = {a["digest"] for a in train[name].artifacts}
        assert {a["digest"] for a in log.artifacts if a["used"]} <= trained  # the very versions trained
        assert [r["_step"] for r in log.history] == read  # one step per checkpoint epoch: the slider
        assert all("gradcam" in r and "knn/accuracy" in r for r in log.history)
        knn = read_tables(log, "knn/table")[0]
        assert knn["columns"][:3] == ["query", "label", "neighbour_1"] and knn["data"]
        assert knn["data"][0][0]["_type"] == "image-file" and knn["data"][0][2]["_type"] == "image-file"
        points = read_tables(log, "embeddings/table")[0]
        assert len(points["data"]) == 32 and points["data"][0][-1]["_type"] == "image-file"  # min(tsne_points 60, num_images 32)
    for _, log in logs.values():
        assert log.summary.get("probe/stage2/knn", 0.5) >= 0 and log.exit_code == 0 or "stop_reason" in log.summary
    for path in root.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), f"API key written to {path}"


def test_demo_refuses_analysis_epochs_that_training_deletes(monkeypatch, tmp_path):
    from convlens.base.errors import ConfigError
    from convlens.jobs.demo import run_demo
    from convlens.specs.load import load_job
    monkeypatch.chdir(REPO)
    job = load_job(REPO / "jobs/demo.yaml", [f"root={tmp_path}"], "demo")
    job.supervised.overrides["run.keep_last"] = 2
    with pytest.raises(ConfigError, match=r"supervised keeps only its last 2 of 5 epochs \(run.keep_last\), "
                                          r"not epoch 1; set supervised.overrides.run.keep_last to 5"):
        run_demo(job)
    assert not list(tmp_path.iterdir())  # refused before any step ran
