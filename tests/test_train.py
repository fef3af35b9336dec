"""Ray Train end to end on real Fashion-MNIST (tiny): DDP correctness, resume, faults."""
import json

import pytest
import torch

from convlens import checkpoint as ckpt
from convlens.config import ConfigError
from convlens.data import DataError
from convlens.training.outputs import read_metrics
from convlens.training.run import RunStopped, train


def final_weights(run_dir):
    return ckpt.load_checkpoint(ckpt.list_checkpoints(run_dir)[-1])["model"]


def test_two_workers_match_one_worker(ray_cluster, tiny_job):
    """Same seed and global batch: sharding + gradient averaging + SyncBN reproduce 1 worker."""
    common = dict(model={"layers": [1, 1], "width": 8, "sync_bn": True}, optim={"lr": 0.01},
                  data={"batch_size": 64, "train_subset": 768})
    one = tiny_job("one", run={"workers": 1, "epochs": 3}, **common)
    two = tiny_job("two", run={"workers": 2, "epochs": 3}, **common)
    s1, s2 = train(one), train(two)
    m1, m2 = read_metrics(one.run_dir), read_metrics(two.run_dir)
    for a, b in zip(m1, m2):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
    assert s1["test_accuracy"] == pytest.approx(s2["test_accuracy"], abs=1 / 256)
    assert (one.run_dir / "loss.png").stat().st_size > 1000 and (one.run_dir / "per_class.csv").is_file()
    summary = json.loads((one.run_dir / "summary.json").read_text())
    assert 0 <= summary["test_accuracy"] <= 1 and summary["best_epoch"] in (1, 2, 3)


def test_resume_after_kill_continues_at_next_epoch(ray_cluster, tiny_job):
    """A worker SIGKILLed in epoch 2 with no retries left: rerunning resumes at epoch 2, nothing lost."""
    straight = tiny_job("straight", run={"epochs": 3})
    train(straight)
    killed = tiny_job("killed", run={"epochs": 3, "max_failures": 0}, faults={"kill_at": "0:2:3"})
    with pytest.raises(Exception):
        train(killed)
    assert [m["epoch"] for m in read_metrics(killed.run_dir)] == [1]
    resumed = tiny_job("killed", run={"epochs": 3, "max_failures": 0})
    train(resumed)
    history = read_metrics(resumed.run_dir)
    assert [m["epoch"] for m in history] == [1, 2, 3]
    assert history[-1]["steps"] == 3 * (history[0]["steps"])
    a, b = final_weights(straight.run_dir), final_weights(resumed.run_dir)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    mtime = (resumed.run_dir / "summary.json").stat().st_mtime
    train(resumed)  # a finished run does no work
    assert (resumed.run_dir / "summary.json").stat().st_mtime == mtime


def test_worker_killed_is_retried(ray_cluster, tiny_job):
    job = tiny_job("retry", run={"epochs": 2, "max_failures": 1}, faults={"kill_at": "0:2:1"})
    train(job)
    assert [m["epoch"] for m in read_metrics(job.run_dir)] == [1, 2]
    assert len(list((job.run_dir / ".faults").glob("kill-*"))) == 1


def test_nan_on_one_rank_stops_all_ranks_cleanly(ray_cluster, tiny_job):
    job = tiny_job("nan", run={"workers": 2, "epochs": 3, "max_failures": 2}, faults={"nan_at": "1:2:4"})
    with pytest.raises(RunStopped, match="epoch 2, step 4"):
        train(job)
    assert [m["epoch"] for m in read_metrics(job.run_dir)] == [1]
    stopped = json.loads((job.run_dir / "stopped.json").read_text())
    assert stopped["epoch"] == 2 and stopped["step"] == 4


@pytest.mark.parametrize("change, error, match", [
    (dict(data={"path": "/nonexistent/fmnist"}), ConfigError, "data.path"),
    (dict(data={"train_subset": 40, "batch_size": 64}), DataError, "fewer than one batch"),
    (dict(run={"workers": 64}), ConfigError, "needs 64 CPUs"),
])
def test_driver_checks_fail_before_any_run_dir(ray_cluster, tiny_job, change, error, match):
    job = tiny_job("bad", **change)
    with pytest.raises(error, match=match):
        train(job)
    assert not job.run_dir.exists()


def test_bad_image_folders_fail_in_the_driver(ray_cluster, tiny_job, tmp_path):
    from PIL import Image
    root = tmp_path / "imgs"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(40):
            Image.new("RGB", (20, 20), (i * 5, 10, 200)).save(root / cls / f"{i}.png")
    (root / "dog" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "empty").mkdir()
    for path, match in ((root, r"broken\.png"), (tmp_path / "empty", "empty")):
        job = tiny_job("folder", data={"dataset": "image_folder", "path": str(path), "image_size": 16,
                                       "train_subset": None, "test_subset": None, "batch_size": 8})
        with pytest.raises((DataError, ConfigError), match=match):
            train(job)
        assert not job.run_dir.exists()
