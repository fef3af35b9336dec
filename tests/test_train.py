"""Ray Train end to end on real Fashion-MNIST (tiny): DDP correctness, faults. (A killed worker retried:
tests/test_tracking.py's `retried` run, which W&B follows too.)"""
import json

import pytest

from conftest import DDP, ONE_WORKER, TWO_WORKERS, inject, read_attempts, read_metrics, reordering_tolerance, tiny_spec
from convlens.training.run import train


def test_two_workers_match_one_worker(uninterrupted):
    """Same seed and global batch: sharding + gradient averaging + SyncBN reproduce 1 worker,
    up to float32 reordering amplified by training (conftest.reordering_tolerance)."""
    one, two = uninterrupted(run=ONE_WORKER, **DDP), uninterrupted(run=TWO_WORKERS, **DDP)
    s1, s2 = (json.loads((run / "summary.json").read_text()) for run in (one, two))
    m1, m2 = read_metrics(one), read_metrics(two)
    assert len(m1) == len(m2) == 3
    for a, b in zip(m1, m2):
        tol = reordering_tolerance(a["epoch"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=tol), a["epoch"]
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=tol), a["epoch"]
    assert s1["test_accuracy"] == pytest.approx(s2["test_accuracy"], abs=1 / 256)
    assert (one / "loss.png").stat().st_size > 1000 and (one / "per_class.csv").is_file()
    assert 0 <= s1["test_accuracy"] <= 1 and s1["best_epoch"] in (1, 2, 3)


def test_nan_on_one_rank_stops_every_rank_the_command_and_its_wandb_run(ray_cluster, tmp_path, cache_dir, capsys,
                                                                        monkeypatch):
    """A non-finite loss on rank 1 of 2 (run.max_failures 2): every rank stops at that step and no
    retry replays it; `convlens train` exits 1 with one line saying why; the W&B run ends failed,
    with the reason, after the one epoch before it."""
    import yaml
    from convlens.cli import main
    from test_tracking import epochs_of, synced
    spec = tmp_path / "nan.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(tmp_path / "runs", cache_dir, "nan", tracking={"mode": "offline"},
                                             run={"workers": 2, "epochs": 3, "max_failures": 2})))
    inject(monkeypatch, {"kind": "nan", "run": "nan", "at": "1:2:4"})
    monkeypatch.setenv("WANDB_MODE", "offline")  # forwarded to the workers; the suite's default is disabled
    assert main(["train", str(spec)]) == 1
    ours = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("(")]  # not Ray's workers
    assert len(ours) == 1 and ours[0].startswith("convlens: error: run nan"), ours
    assert "non-finite loss at epoch 2" in ours[0] and "epoch 2, step 4" in ours[0], ours
    run_dir = tmp_path / "runs" / "nan"
    assert [m["epoch"] for m in read_metrics(run_dir)] == [1]
    assert len(read_attempts(run_dir)) == 1  # no retry replayed the NaN
    stopped = json.loads((run_dir / "stopped.json").read_text())
    assert stopped["epoch"] == 2 and stopped["step"] == 4
    log = synced(run_dir)[(run_dir / "wandb_id.txt").read_text().strip()]
    assert "non-finite loss at epoch 2" in log.summary["stop_reason"] and log.exit_code == 1
    assert epochs_of(log) == [1]


def test_nonfinite_check_finds_the_first_bad_step_one_check_later_or_at_epoch_end():
    """The GPU never waits on a check: a NaN is reported at the next check (or at once at the
    epoch's last step), always with the first bad step."""
    import torch
    from convlens.training.nonfinite import NonFiniteWatch
    watch, found = NonFiniteWatch(torch.device("cpu")), []
    for step in range(75):
        watch.note(torch.tensor(float("nan") if step in (30, 40) else 1.0), step)
        if (step + 1) % 25 == 0:
            found.append(watch.check(final=False))
    assert found == [None, None, 30]
    final = NonFiniteWatch(torch.device("cpu"))
    final.note(torch.tensor(float("inf")), 7)
    assert final.check(final=True) == 7


def test_frozen_parts_stay_bit_identical(ray_cluster, tiny_job, tmp_path):
    """Fine-tuning a pretrained network (of another class count: the head is replaced) with the
    stem and layer1 frozen: their weights and batch-norm statistics leave training bit-identical
    to the file, while the rest learns."""
    import torch
    from conftest import final_weights
    from convlens.models.resnet import ResNet
    torch.manual_seed(5)
    source = ResNet([1, 1], 8, in_chans=1, num_classes=4)
    for m in source.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "pretrained.pth"
    torch.save(source.state_dict(), path)
    job = tiny_job("frozen", model={"layers": [1, 1], "width": 8, "pretrained": str(path),
                                    "freeze": ["stem", "layer1"]})
    train(job)
    final, start = final_weights(job.run_dir), source.state_dict()
    frozen = [k for k in final if k.startswith(("conv1.", "bn1.", "layer1."))]
    assert len(frozen) == 18 and all(torch.equal(final[k], start[k]) for k in frozen)
    assert any("running_var" in k for k in frozen)
    assert not torch.equal(final["layer2.0.conv1.weight"], start["layer2.0.conv1.weight"])
    assert not torch.equal(final["layer2.0.bn1.running_mean"], start["layer2.0.bn1.running_mean"])
    assert final["fc.weight"].shape == (10, 16)


def test_every_ray_process_of_a_job_collects_garbage_less_often(ray_cluster):
    """The job's Ray processes collect as the driver does (base/startup.py): a task, and an actor
    with environment variables of its own, as Ray Train starts its controller and workers."""
    import gc
    from convlens.base.startup import THRESHOLDS

    @ray_cluster.remote(num_cpus=0)
    def task_thresholds():
        return gc.get_threshold()

    @ray_cluster.remote(num_cpus=0)
    class Actor:
        def thresholds(self):
            return gc.get_threshold()

    actor = Actor.options(runtime_env={"env_vars": {"CONVLENS_PROBE": "1"}}).remote()
    assert ray_cluster.get([task_thresholds.remote(), actor.thresholds.remote()]) == [THRESHOLDS] * 2
    assert gc.get_threshold() == THRESHOLDS  # this test process too (conftest), as the CLI's
