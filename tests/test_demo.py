"""The demo pipeline end to end at reduced size, as a user runs it (`convlens demo <spec>`, the
session's `demo` fixture in conftest.py): both networks, probes, sweep, analysis, report; the W&B API
key it ran with written nowhere; then the README's results block written from its files, checked
sentence by sentence."""
import json
import re
from pathlib import Path

import pytest

from conftest import assert_absent
from results_check import check_block

REPO = Path(__file__).resolve().parents[1]


def test_demo_end_to_end_at_reduced_size(demo):
    root, report = demo.root, demo.report
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
    check_wandb(root, index)
    check_key_never_written(demo)


def check_key_never_written(demo) -> None:
    """WANDB_API_KEY set to a sentinel in the shell of `convlens demo` (offline W&B, its own local Ray):
    the sentinel is in no run, trial or W&B file, in none of Ray's session logs, and in none of its
    output; a quiet trial prints nothing on the terminal, but its W&B Logs tab has its epoch lines."""
    from convlens.tracking.sync import plan
    from wandb_reader import read_run
    wandb_logs = list(demo.root.rglob("*.wandb"))
    ray_logs = list(demo.ray_tmp.rglob("session_*/logs/*"))
    assert len(wandb_logs) >= 4 and len(ray_logs) > 10  # every run logged; Ray wrote its logs
    checked = assert_absent(demo.key, [demo.root, demo.ray_tmp], demo.stdout + demo.stderr)
    assert checked > 50
    sweep_dir = next(demo.root.glob("*/trials.csv")).parent
    trials = [read_run(seg.folder / f"run-{seg.run_id}.wandb") for seg in plan(sweep_dir)[0]]
    texts = {log.config["run"]["name"]: ("".join(o["line"] for o in log.output),
                                         [r["epoch"] for r in log.history if "train/loss" in r])
             for log in trials if log.job_type == "train"}
    assert len(texts) == 2, texts
    for name, (text, epochs) in texts.items():
        assert epochs and all(f"[convlens] {name} epoch {e}/4: train loss" in text for e in epochs), (name, text)
    assert not re.search(r"epoch \d+/\d+: train loss", demo.stdout.split("sweeping")[-1])


def test_results_block_states_the_demo_numbers(demo, tmp_path, capsys):
    """`convlens report --markdown` on the demo: every sentence's numbers are the files', every word
    that compares them agrees with them; --into puts exactly that block between the README's markers."""
    from convlens.cli import main
    from convlens.report.markdown import BEGIN, END
    root = demo.root
    assert main(["report", "--markdown", str(root)]) == 0
    block = capsys.readouterr().out
    print(block)
    check_block(root, block)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\ntext before\n{BEGIN}\nold figures\n{END}\ntext after\n")
    assert main(["report", "--markdown", str(root), "--into", str(readme)]) == 0
    expected = block.replace(f"--markdown {root}`", f"--markdown {root} --into {readme}`")
    assert readme.read_text() == f"# title\n\ntext before\n{BEGIN}\n{expected}{END}\ntext after\n"


def check_wandb(root: Path, index: dict) -> None:
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
