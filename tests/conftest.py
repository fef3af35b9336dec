"""Shared fixtures: one Ray cluster per test session, tiny real Fashion-MNIST jobs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

FMNIST = Path("/usr/share/datasets/fashion-mnist")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster shared by every test; 4 logical CPUs so 2 trials x 1 worker fit."""
    import ray
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, log_to_driver=True,
                 logging_level="ERROR", configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("dataset-cache"))


def tiny_spec(root: Path, cache_dir: str, name: str = "tiny", **sections) -> dict:
    """A train spec small enough for seconds on CPU: 1-block-per-stage ResNet, 2k images."""
    spec = {
        "kind": "train",
        "run": {"name": name, "root": str(root), "epochs": 2, "workers": 1, "seed": 0,
                "quiet": True, "max_failures": 0},
        "data": {"dataset": "fashion_mnist", "path": str(FMNIST), "batch_size": 64,
                 "train_subset": 1024, "test_subset": 256, "cache_dir": cache_dir},
        "model": {"layers": [1, 1], "width": 8},
        "optim": {"name": "sgd", "lr": 0.05},
        "schedule": {"name": "constant"},
    }
    for section, values in sections.items():
        spec.setdefault(section, {}).update(values)
    return spec


@pytest.fixture
def tiny_job(tmp_path, cache_dir):
    """Factory: tiny_job(name=..., run={...}, data={...}) -> validated TrainJob."""
    from convlens.config import TrainJob, validate

    def make(name="tiny", **sections):
        return validate(TrainJob, tiny_spec(tmp_path / "runs", cache_dir, name, **sections))
    return make
