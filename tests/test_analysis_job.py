"""The analyze job end to end: two tiny real runs (supervised and rotation, the reduced demo's), two
epochs each, every method as Ray tasks, and every file in index.json a real picture or JSON."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from convlens.analysis.job import analyze
from convlens.analysis.registry import names
from convlens.specs.analyze import AnalyzeJob
from conftest import inject
from convlens.base.errors import ConfigError
from convlens.specs.base import validate
from convlens.storage.checkpoint import verify


@pytest.fixture(scope="module")
def two_runs(demo, ray_cluster):
    """The reduced demo's two trained networks (supervised, rotation; 2 epochs, every checkpoint kept),
    which other modules read too: a test here writes only below its own tmp_path, never into them."""
    return [demo.root / "supervised", demo.root / "rotation"]


def file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_analyze_two_runs_two_epochs_all_methods(demo, two_runs, tmp_path):
    """The demo's analysis: both networks at epochs [1, last = 2], every method (options num_images 32,
    num_train 128, inversion_steps 5, tsne_points 60), compared."""
    out = demo.root / "analysis"
    index = json.loads((out / "index.json").read_text())
    files = index["files"]
    for run in ("supervised", "rotation"):
        for epoch in (1, 2):
            done = {e["method"] for e in files if e["run"] == run and e["epoch"] == epoch} - {"compare", "similarity"}
            assert done == set(names()), (run, epoch)
    assert any(e["method"] == "compare" and " vs " in e["run"] for e in files)
    assert list(index["methods"]) == [*names(), "compare", "similarity"]  # the report's words for each section
    assert all(m["title"] and m["explanation"] for m in index["methods"].values())
    for entry in files:
        path = out / entry["file"]
        assert path.is_file() and entry["caption"] and entry["method"], entry
        if path.suffix == ".png":
            img = matplotlib.image.imread(path)
            assert img.shape[0] > 100 and img.shape[1] > 100, path
            assert np.ptp(img[..., :3]) > 0.1, f"{path} is one colour"
        else:
            assert json.loads(path.read_text())["method"] == entry["method"]
    faith = index["tables"]["faithfulness"]  # areas per run and epoch, for the report's table and trend
    assert [r[:2] for r in faith["rows"]] == [["rotation", 1], ["rotation", 2], ["supervised", 1], ["supervised", 2]]
    assert all(0 <= v <= 1 for r in faith["rows"] for v in r[2:])
    assert (out / "compare" / "supervised__faithfulness__trend.png").is_file()
    depth = index["tables"]["gradcam_depth"]  # two-stage networks: no columns for stages 3 and 4
    assert depth["columns"] == ["run", "epoch", *(f"{m}_auc_stage{i}" for m in ("deletion", "insertion")
                                                  for i in (1, 2))]
    cka = index["tables"]["similarity"]  # the two networks, stage by stage, at each common epoch
    assert cka["columns"] == ["run", "epoch", "cka_layer1", "cka_layer2"]
    assert [r[:2] for r in cka["rows"]] == [["rotation vs supervised", 1], ["rotation vs supervised", 2]]
    assert all(-0.1 < v <= 1 + 1e-6 for r in cka["rows"] for v in r[2:])
    settle = json.loads((out / "compare" / "similarity.json").read_text())["result"]["within"]
    assert {w["run"] for w in settle} == {"supervised", "rotation"}
    assert all(np.allclose(w["to_last"][-1], 1.0) and w["epochs"] == [1, 2] for w in settle)  # last vs itself
    rot_dir = next((out / "rotation").glob("checkpoint_epoch0002*"))
    rot = json.loads((rot_dir / "confusion.json").read_text())
    assert len(rot["result"]["per_class_accuracy"]) == 4  # judged on rotations
    assert not list(out.rglob(".*.tmp-*"))
    # a missing epoch is refused before any task starts, naming what exists
    missing = validate(AnalyzeJob, {"runs": [str(two_runs[0])], "epochs": [7], "out": str(tmp_path / "a")})
    with pytest.raises(ConfigError, match=r"no checkpoint for epoch 7; has \[1, 2\]"):
        analyze(missing)


def test_killed_analysis_task_is_retried_and_writes_each_output_once(two_runs, tmp_path, monkeypatch):
    sup = two_runs[0]
    inject(monkeypatch, {"kind": "kill_method", "method": "gradcam"})
    before = file_hashes(sup)
    job = validate(AnalyzeJob, {
        "name": "k", "out": str(tmp_path / "analysis"), "runs": [str(sup)], "epochs": [2], "quiet": True,
        "methods": ["gradcam", "filters"],
        "options": {"num_images": 32, "num_train": 64}})
    out = analyze(job)
    folder = next((out / sup.name).glob("checkpoint_epoch0002*"))
    killed_pid = int((folder / ".killed-gradcam").read_text())  # the first attempt really died
    summary = json.loads((folder / "gradcam.json").read_text())
    assert summary["pid"] != killed_pid  # the retry wrote the JSON the killed attempt never reached
    files = [e["file"] for e in json.loads((out / "index.json").read_text())["files"]]
    assert len(files) == len(set(files)) and sum("gradcam" in f for f in files) == len(summary["files"]) + 1
    for png in folder.glob("*.png"):
        assert matplotlib.image.imread(png).shape[0] > 100, png
    raw = {p.name for p in folder.iterdir() if p.suffix == ".npz"}  # arrays for W&B tables, not report files
    assert {p.name for p in folder.iterdir() if not p.name.startswith(".")} - raw == {Path(f).name for f in files}
    assert not list(out.rglob(".*.tmp-*"))
    assert file_hashes(sup) == before  # analysis never writes into a run
    for ckpt in sup.glob("checkpoint_epoch*"):
        verify(ckpt)
    with pytest.raises(ConfigError, match="faults: unknown field"):  # test hooks are not part of a spec
        validate(AnalyzeJob, {"runs": ["x"], "faults": {"kill_method": "gradcam"}})


def test_analysis_is_its_own_wandb_run_one_step_per_epoch(demo):
    """The demo's analysis of its tracked supervised run (WANDB_MODE offline, system metrics every
    second): its own run (job_type analysis, the training run's group) that uses the checkpoint of
    every epoch it read, one step per epoch (W&B's slider), the figures under stable keys, and
    kNN / embedding / CAM tables with image columns; and the whole job (runtime, system metrics,
    its console) in what `convlens sync` uploads, written below the analysis, not into the run."""
    from convlens.tracking.sync import plan
    from wandb_reader import check_whole_job, read_run, read_tables, wait_finished
    out, sup = demo.root / "analysis", demo.root / "supervised"
    train_id = (sup / "wandb_id.txt").read_text().strip()  # the demo tracked its training (group demo)
    chosen, superseded = plan(out)
    assert len(chosen) == 2 and not superseded  # one analysis run per analysed network
    index = json.loads((out / "index.json").read_text())
    run_id = index["wandb_run_ids"][sup.name]
    [segment] = [seg for seg in chosen if seg.run_id == run_id]
    wait_finished(segment.folder, run_id)
    log = read_run(segment.folder / f"run-{run_id}.wandb")
    assert log.job_type == "analysis" and log.group == "demo" and log.config["train_run_id"] == train_id
    used = [a for a in log.artifacts if a["used"]]
    assert {a["name"] for a in used} == {f"model-{train_id}"}
    assert sorted(a["metadata"]["epoch"] for a in used) == [1, 2] and all(a["metadata"]["sha256"] for a in used)
    assert [row["_step"] for row in log.history] == [1, 2]
    keys = {m["key"] for m in log.media if m["step"] == 2}  # <method>, or <method>_<panel> (filters_conv1)
    assert all(any(k == m or k.startswith(f"{m}_") for k in keys) for m in names())
    assert any(c.startswith("epoch 2: ") for m in log.media for c in m["captions"])
    assert all(0 <= row["knn/accuracy"] <= 1 for row in log.history)
    assert sorted((t["key"], t["step"]) for t in log.tables) == [
        (k, e) for k in ("cam/table", "embeddings/table", "gradcam/table", "knn/table") for e in (1, 2)]
    knn = read_tables(log, "knn/table")[-1]
    assert knn["columns"][:3] == ["query", "label", "neighbour_1"] and len(knn["columns"]) == 2 + 10 + 2  # k = 10
    assert all(cell["_type"] == "image-file" for row in knn["data"] for cell in row[:1] + row[2:12])
    points = read_tables(log, "embeddings/table")[0]
    assert len(points["data"]) == 32 and points["columns"][-2:] == ["class", "thumbnail"]  # num_images < tsne_points
    assert points["data"][0][-1]["_type"] == "image-file"
    cams = read_tables(log, "gradcam/table")[-1]
    assert cams["columns"] == ["image", "overlay", "true", "predicted", "confidence"] and cams["data"]
    assert cams["data"][0][1]["_type"] == "image-file"
    wall = json.loads((demo.root / "timings.json").read_text())["steps"]["analysis"]
    text = check_whole_job(log, wall, 1.0)
    assert f"[convlens] analysis demo: {len(index['files'])} files" in text
    assert not list(sup.rglob(f"*{run_id}*"))  # its W&B run is below the analysis, not in the training run


def test_unknown_method_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown \\['gradcamm'\\]"):  # before any work starts
        analyze(validate(AnalyzeJob, {"runs": ["x"], "methods": ["gradcamm"], "out": str(tmp_path / "a")}))
    assert not (tmp_path / "a").exists()
