"""Search algorithms and schedulers of `convlens sweep`: TPE (Optuna), PBT, no early stopping;
each on a tiny real sweep, killed and resumed, and the spaces they refuse."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest
import torch
import yaml

from conftest import assert_nothing_lost, committed_epochs, inject, read_attempts
from test_sweep import FAST, check_sweep_run, read_trials, sweep_cli, write_sweep
from convlens.base.errors import ConfigError
from convlens.specs.load import load_job


def test_tpe_and_pbt_refuse_what_they_cannot_take(tmp_path, cache_dir):
    path = write_sweep(tmp_path, cache_dir, "v", {"optim.lr": {"grid": [0.1, 0.05]}})
    with pytest.raises(ConfigError, match="space.optim.lr: grid cannot be searched by TPE"):
        load_job(path, ["search=tpe"], "sweep")
    with pytest.raises(ConfigError, match=r"space.schedule.milestones: TPE \(search: tpe\) chooses among numbers"):
        load_job(path, ["search=tpe", "space.optim.lr={loguniform: [0.01, 0.1]}",
                        "space.schedule.milestones={choice: [[1], [2]]}"], "sweep")
    with pytest.raises(ConfigError, match="scheduler.name: pbt has nothing to perturb: space has none of optim.lr"):
        load_job(path, ["scheduler.name=pbt", "space={run.seed: {grid: [0, 1]}}"], "sweep")
    with pytest.raises(ConfigError, match="scheduler.name: pbt picks each trial's next values itself"):
        load_job(path, ["scheduler.name=pbt", "search=tpe", "space.optim.lr={uniform: [0.01, 0.1]}"], "sweep")
    with pytest.raises(ConfigError, match="scheduler.perturbation_interval: 3 leaves PBT no perturbation"):
        load_job(path, ["scheduler.name=pbt", "scheduler.perturbation_interval=3"], "sweep")
    with pytest.raises(ConfigError, match="scheduler.synch: true applies to PBT only, not scheduler.name: asha"):
        load_job(path, ["scheduler.synch=true"], "sweep")
    tpe = load_job(path, ["search=tpe", "space.optim.lr={loguniform: [0.01, 0.1]}",
                          "space.optim.name={choice: [sgd, adam]}"], "sweep")
    assert tpe.search == "tpe"
    pbt = load_job(path, ["scheduler.name=pbt", "space.optim.weight_decay={choice: [0.0, 0.001]}"], "sweep")
    assert pbt.perturbed == ["optim.lr", "optim.weight_decay"]
    from convlens.sweep.array import check_arrayable
    with pytest.raises(ConfigError, match="scheduler.name = pbt: PBT copies checkpoints between trials"):
        check_arrayable(pbt)
    with pytest.raises(ConfigError, match="search = tpe: TPE proposes each trial from the results"):
        check_arrayable(tpe.model_copy(update={"scheduler": pbt.scheduler.model_copy(update={"name": "none"})}))


def test_retarget_keeps_the_schedule_and_takes_the_new_values():
    """A donor's optimizer and schedule continue under the new lr (same place in the schedule),
    momentum and weight decay."""
    from types import SimpleNamespace
    from convlens.training.optim import retarget
    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([param], lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [2, 4], 0.1)
    for _ in range(3):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    retarget(opt, sched, {"lr": 0.1}, SimpleNamespace(lr=0.2, momentum=0.5, weight_decay=0.0))
    group = opt.param_groups[0]
    assert group["lr"] == pytest.approx(0.02) and group["initial_lr"] == pytest.approx(0.2)
    assert (group["momentum"], group["weight_decay"]) == (0.5, 0.0)
    opt.step()
    sched.step()  # epoch 4: the second milestone, from the new base
    assert opt.param_groups[0]["lr"] == pytest.approx(0.002)


def test_pbt_trial_restored_from_before_its_donor_goes_on_with_the_donor_start_values(tiny_job):
    """A sweep killed after a trial took a donor, resumed from Tune's state saved before that:
    Tune gives the trial its own old pointer (or none) and its old lr; the trial goes on from the
    donor copy (its own checkpoint once its run has one) with the lr it took with the donor."""
    from convlens.storage.rundir import RunDir
    from convlens.sweep.pbt import start_point, with_values
    job = tiny_job("pbt_trial_00001", optim={"name": "sgd", "lr": 2e-5}, tracking={"params": {"optim.lr": 2e-5}})
    run = RunDir(job.run_dir)
    run.path.mkdir(parents=True)
    old = {"optim.lr": 2e-5}
    assert start_point(run, "00001", None, old) == (None, old)  # no donor taken: Tune's values
    (run / RunDir.PERTURBATIONS).write_text(json.dumps({"epoch": 2, "from": "00000", "optim.lr": 0.0885}) + "\n")
    copy = run / RunDir.folder_name(RunDir.DONOR, 2)
    copy.mkdir()
    for pointer in (None, {"trial": "00001", "path": "elsewhere", "epoch": 1}):
        assert start_point(run, "00001", pointer, old) == (str(copy), {"optim.lr": 0.0885})
    (run / RunDir.RAY_SNAPSHOT).write_text("{}")  # its run has checkpoints since: Train resumes them
    assert start_point(run, "00001", None, old) == (None, {"optim.lr": 0.0885})
    now = with_values(job, {"optim.lr": 0.0885})
    assert now.optim.lr == 0.0885 and now.tracking.params["optim.lr"] == 0.0885 and now.run_dir == job.run_dir


def test_killed_tpe_sweep_resumes_keeping_finished_trials(ray_cluster, tmp_path, cache_dir, monkeypatch):
    """TPE with no early stopping (scheduler none), seeded: 3 trials proposed one after the other
    by Optuna. The sweep driver SIGKILLed while trial 00000 has finished and 00001 is mid-run
    (held in epoch 2, after its epoch 1 is committed): --resume restores the study, reruns no
    finished trial, resumes the interrupted one at epoch 2 from its own checkpoint, has Optuna
    propose the last (00002) and loses nothing; 3 distinct numbered trials. The sweep's own W&B
    run (offline, from the base spec) shows both drivers, from the first start. A random (and so
    grid: the same drawn trials) sweep killed and resumed is test_pbt_perturbs_from_donor_...'s;
    TPE + ASHA runs end to end in the search bench's smoke test."""
    inject(monkeypatch, {"kind": "hold", "run": "*_00001", "at": "0:2:1"})
    # the trials' actors keep the test cluster's WANDB_MODE=disabled: only the sweep's run is tracked
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_SERVICE", raising=False)  # each driver its own W&B service, as from a shell
    space = {"optim.lr": {"loguniform": [0.01, 0.2]}, "optim.name": {"choice": ["sgd", "adam"]}}
    path = write_sweep(tmp_path, cache_dir, "tpe", space, search="tpe", seed=0, num_samples=3, max_concurrent=1,
                       scheduler={"name": "none"}, tracking={"stats_interval": 1.0})
    job = load_job(path, [], "sweep")
    trials_dir = job.sweep_dir / "trials"
    begun = time.time()
    driver = sweep_cli(path)
    deadline = time.time() + 150
    while not list(trials_dir.glob("*/.faults/hold-0")) and time.time() < deadline and driver.poll() is None:
        time.sleep(0.2)
    held = [p.parents[1] for p in trials_dir.glob("*/.faults/hold-0")]
    assert held, driver.communicate()[0][-3000:] if driver.poll() is not None else "no trial held"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    killed = time.time()
    held = held[0]
    finished = {p.parent.name: (p.stat().st_mtime_ns, (p.parent / "metrics.jsonl").stat().st_mtime_ns)
                for p in trials_dir.glob("*/summary.json")}
    assert list(finished) == ["tpe_trial_00000"] and held.name == "tpe_trial_00001" and committed_epochs(held) == [1]
    assert sorted(p.name for p in trials_dir.iterdir()) == ["tpe_trial_00000", "tpe_trial_00001"]  # 00002 not yet
    assert not (job.sweep_dir / "trials.csv").exists()

    again = sweep_cli(path, "--resume")
    out = again.communicate(timeout=170)[0]
    wall = time.time() - begun
    assert again.returncode == 0, out[-3000:]
    trials = read_trials(job.sweep_dir)
    assert sorted(r["trial_id"] for r in trials) == ["00000", "00001", "00002"], trials
    assert all(r["status"] == "completed" and (r["searcher"], r["scheduler"]) == ("tpe", "none") for r in trials)
    assert len({r["config/optim.lr"] for r in trials}) == 3
    assert all(0.01 <= float(r["config/optim.lr"]) <= 0.2 and r["config/optim.name"] in ("sgd", "adam")
               for r in trials)
    assert sorted(p.name for p in trials_dir.iterdir()) == [f"tpe_trial_0000{i}" for i in range(3)]
    for name, (summary_mtime, metrics_mtime) in finished.items():
        assert (trials_dir / name / "summary.json").stat().st_mtime_ns == summary_mtime
        assert (trials_dir / name / "metrics.jsonl").stat().st_mtime_ns == metrics_mtime
        assert len(read_attempts(trials_dir / name)) == 1
    assert_nothing_lost(held, FAST["epochs"], FAST["steps_per_epoch"], [1, 2])
    check_sweep_run(job.sweep_dir, wall, killed)


def test_pbt_perturbs_from_donor_checkpoints_and_resumes(ray_cluster, tmp_path, cache_dir, monkeypatch):
    """Synchronous PBT over 2 trials of 3 epochs, a useful and a useless learning rate (seed 31
    draws 0.11 and 2e-5), perturbing every 2 epochs: both trials wait at epoch 2, then the bottom
    one restarts from the top one's epoch-2 Train checkpoint with a perturbed lr, recorded, on any
    machine however fast its trials; killed then, --resume finishes both; trials.csv, the lr
    figure and the report show it. The first driver saves Tune's state only as it starts
    (TUNE_GLOBAL_CHECKPOINT_S), so the resumed sweep restores the trials' configs from before the
    perturbation, as any kill within Tune's save period (about 10 s) would: the perturbed trial
    must still go on with its new lr. The resumed sweep's fresh scheduler syncs no more: epoch 3 is
    the last, and PBT never perturbs at the last epoch."""
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "100000")
    space = {"optim.lr": {"loguniform": [1e-5, 0.3]}}
    path = write_sweep(tmp_path, cache_dir, "pbt", space, run={"epochs": 3, "steps_per_epoch": 10},
                       data={"train_subset": 2000}, search="random", num_samples=2, seed=31,
                       scheduler={"name": "pbt", "perturbation_interval": 2, "quantile_fraction": 0.5,
                                  "synch": True})
    job = load_job(path, [], "sweep")
    trials_dir = job.sweep_dir / "trials"
    driver = sweep_cli(path)
    deadline = time.time() + 300
    while not list(trials_dir.glob("*/perturbations.jsonl")) and time.time() < deadline and driver.poll() is None:
        time.sleep(0.2)
    assert list(trials_dir.glob("*/perturbations.jsonl")), (driver.communicate()[0][-3000:]
                                                           if driver.poll() is not None else "no perturbation")
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    monkeypatch.delenv("TUNE_GLOBAL_CHECKPOINT_S")
    again = sweep_cli(path, "--resume")
    out = again.communicate(timeout=400)[0]
    assert again.returncode == 0, out[-3000:]
    trials = {r["trial_id"]: r for r in read_trials(job.sweep_dir)}
    assert len(trials) == 2 and all(r["status"] == "completed" for r in trials.values()), trials
    assert all(r["scheduler"] == "pbt" for r in trials.values())
    perturbed = {tid: r for tid, r in trials.items() if r["perturbations"]}
    assert perturbed["00001"]["perturbations"].startswith("epoch 2 from 00000: optim.lr="), trials  # the useless lr
    for tid, row in perturbed.items():
        run = trials_dir / f"pbt_trial_{tid}"
        entries = [json.loads(line) for line in (run / "perturbations.jsonl").read_text().splitlines()]
        assert all(e["from"] != tid and e["from"] in trials and e["epoch"] == 2 for e in entries)
        assert row["perturbations"].startswith(f"epoch {entries[0]['epoch']} from {entries[0]['from']}: optim.lr=")
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [h["epoch"] for h in history] == [1, 2, 3]  # the model's lineage, every epoch once
        last = entries[-1]  # then its model trains with the new lr (constant schedule)
        assert history[last["epoch"]]["lr"] == pytest.approx(last["optim.lr"])
        assert history[last["epoch"]]["lr"] != pytest.approx(history[last["epoch"] - 1]["lr"])
    assert (job.sweep_dir / "learning_rates.png").stat().st_size > 10_000
    from convlens.report.sweeps import sweep_section
    html = sweep_section(job.sweep_dir)
    assert "Population Based Training" in html and "perturbations" in html and "learning rates" in html
    best = yaml.safe_load((job.sweep_dir / "best_job.yaml").read_text())["optim"]["lr"]
    assert best == pytest.approx(float(next(r for r in trials.values() if r["best"] == "True")["config/optim.lr"]))


def test_search_bench_checks_every_method_first_then_runs_the_chosen(ray_cluster, tmp_path, cache_dir, capsys):
    """python -m convlens.bench.search, smoke size. Every method's sweep spec is checked before the
    first sweep starts: a space PBT cannot perturb fails at once, with nothing run. Then
    --methods tpe+asha (the one pairing no other test runs), one seed: one trial of 2 epochs of 1
    step (2 epochs: ASHA needs one before the last), proposed by TPE and scheduled by ASHA, and
    the table. (Random + ASHA through the same bench.asha.run_sweep: the ASHA bench test in
    tests/test_sweep.py; PBT's perturbations: test_pbt_...; TPE proposing trials one from another:
    test_killed_tpe_sweep_resumes_keeping_finished_trials.)"""
    from convlens.bench.search import main
    seeds_only = write_sweep(tmp_path, cache_dir, "seeds", {"run.seed": {"randint": [0, 9]}}, search="random")
    with pytest.raises(ConfigError, match="scheduler.name: pbt has nothing to perturb"):
        main([str(seeds_only), "--root", str(tmp_path / "bench"), "--seeds", "0"])
    assert not (tmp_path / "bench").exists()  # not even random + ASHA, the first method, started
    space = {"optim.lr": {"loguniform": [0.01, 0.2]}, "optim.momentum": {"uniform": [0.8, 0.95]}}
    path = write_sweep(tmp_path, cache_dir, "bench", space, run={"epochs": 2, "steps_per_epoch": 1},
                       data={"train_subset": 256, "test_subset": 64}, search="random", num_samples=1)
    results = main([str(path), "--root", str(tmp_path / "bench"), "--seeds", "0", "--methods", "tpe+asha"])
    assert list(results) == ["tpe+asha"] and len(results["tpe+asha"]) == 1
    assert results["tpe+asha"][0]["trials"] == 1 and 0 < results["tpe+asha"][0]["best_val_accuracy"] <= 1
    assert sorted(p.name for p in (tmp_path / "bench").iterdir()) == ["tpe_asha_s0"]
    [trial] = read_trials(tmp_path / "bench" / "tpe_asha_s0")
    assert (trial["trial_id"], trial["searcher"], trial["scheduler"]) == ("00000", "tpe", "asha")
    assert trial["status"] == "completed" and 0.01 <= float(trial["config/optim.lr"]) <= 0.2, trial
    out = capsys.readouterr().out
    assert "tpe+asha" in out and "random+asha" not in out and "best val acc" in out
