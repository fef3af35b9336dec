"""GPU shares: run.gpus_per_worker lets a one-GPU Ray cluster hold several runs or sweep trials.
The conftest cluster declares one logical GPU, so Ray's scheduling is real; nothing runs on it."""
from __future__ import annotations

import pytest
import yaml

from conftest import tiny_spec
from convlens.base.errors import ConfigError
from convlens.raycluster.connect import check_fits, worker_resources
from convlens.specs.load import load_job
from convlens.specs.train import TrainJob
from convlens.sweep.tune_runner import concurrency


def sweep_job(tmp_path, cache_dir, gpus_per_worker: float):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(tiny_spec(tmp_path, cache_dir, "base")))
    spec = {"kind": "sweep", "name": "packed", "root": str(tmp_path), "base": str(tmp_path / "base.yaml"),
            "space": {"optim.lr": {"choice": [0.01, 0.02, 0.05, 0.1]}}, "max_concurrent": 4,
            "resources": {"use_gpu": True, "gpus_per_worker": gpus_per_worker, "cpus_per_worker": 0.5,
                          "trial_cpus": 0.25, "workers": 1}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    return load_job(tmp_path / "sweep.yaml", [], "sweep")


@pytest.mark.parametrize("share, trials", [(1.0, 1), (0.5, 2), (0.25, 4)])
def test_a_sweep_packs_trials_onto_one_gpu_by_their_share(ray_cluster, tmp_path, cache_dir, capsys, share, trials):
    from convlens.specs.base import validate
    from convlens.sweep.trial import trial_spec
    job = sweep_job(tmp_path, cache_dir, share)
    train = validate(TrainJob, trial_spec(job))
    assert worker_resources(train.run) == {"CPU": 0.5, "GPU": share}
    assert concurrency(job, train) == trials
    if trials < 4:
        assert f"max_concurrent 4 -> {trials}: what the cluster fits" in capsys.readouterr().out


def test_ray_places_as_many_workers_as_their_shares_fit(ray_cluster):
    """Real placement: four tasks that each ask for one worker's resources at 0.25 GPU are all
    running at once on the one logical GPU; at 0.5 never more than two are. Each task waits in a
    room until that many are inside together (so a slow machine, starting workers late, cannot
    make it fail), then stays a second longer."""
    import time
    ray = ray_cluster

    @ray.remote(num_cpus=0)
    class Room:
        def __init__(self):
            self.inside = self.most = 0

        def enter(self):
            self.inside += 1
            self.most = max(self.most, self.inside)

        def leave(self):
            self.inside -= 1

        def count(self) -> int:
            return self.inside

        def peak(self) -> int:
            return self.most

    @ray.remote
    def meet(room, together: int) -> None:
        ray.get(room.enter.remote())
        deadline = time.time() + 60
        while ray.get(room.count.remote()) < together and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        ray.get(room.leave.remote())

    for share, together in ((0.25, 4), (0.5, 2)):
        run = TrainJob.model_validate({"run": {"use_gpu": True, "gpus_per_worker": share,
                                               "cpus_per_worker": 0.5}}).run
        res = worker_resources(run)
        room = Room.remote()
        ray.get([meet.options(num_cpus=res["CPU"], num_gpus=res["GPU"]).remote(room, together) for _ in range(4)])
        assert ray.get(room.peak.remote()) == together, share


def test_a_run_asking_for_more_gpu_than_the_cluster_has_fails_naming_the_field(ray_cluster):
    run = TrainJob.model_validate({"run": {"use_gpu": True, "workers": 2, "cpus_per_worker": 0.5}}).run
    with pytest.raises(ConfigError, match=r"run.workers = 2 x run.gpus_per_worker = 1 needs 2 GPUs, "
                                          r"but the Ray cluster has 1"):
        check_fits(run)
    check_fits(run.model_copy(update={"gpus_per_worker": 0.5}))


def test_gpu_share_is_validated():
    with pytest.raises(ValueError, match="gpus_per_worker"):
        TrainJob.model_validate({"run": {"gpus_per_worker": 1.5}})
