"""The GPU paths: NCCL, bf16 autocast, channels_last and torch.compile through Ray Train, the
analysis job's GPU tasks and the GPU benchmark. They need a CUDA GPU, which CI has not; the
CPU versions of the same paths run in the other test files."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import FMNIST, read_attempts, tiny_spec

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory, cache_dir, ray_cluster):
    from convlens.specs.base import validate
    from convlens.specs.train import TrainJob
    from convlens.training.run import train
    job = validate(TrainJob, tiny_spec(
        tmp_path_factory.mktemp("runs"), cache_dir, "gpu",
        run={"use_gpu": True, "compile": True, "epochs": 4},
        data={"train_subset": 4096, "test_subset": 1024, "batch_size": 128},
        model={"layers": [1, 1, 1], "width": 16}, optim={"lr": 0.1, "momentum": 0.9},
        schedule={"name": "onecycle"}))
    return job, train(job)


def test_training_on_the_gpu_uses_nccl_bf16_channels_last_and_compile(gpu_run):
    job, summary = gpu_run
    attempt = read_attempts(job.run_dir)[0]
    assert attempt["device"] != "cpu" and attempt["backend"] == "nccl"
    assert attempt["bf16"] and attempt["channels_last"] and attempt["compile"]
    assert summary["test_accuracy"] > 0.6  # 4 epochs on 4k images; chance is 0.1


def test_a_gpu_checkpoint_evaluates_the_same_on_the_cpu(gpu_run):
    """Weights are saved in float32 without DDP/compile prefixes: a CPU-only user can load them."""
    from convlens.data.load import load_dataset
    from convlens.models.resnet import build_model
    from convlens.storage.checkpoint import best_checkpoint, load_model_weights
    from convlens.training.evaluate import evaluate
    job, summary = gpu_run
    data = load_dataset(job.data)
    model = build_model(job.model, data.in_chans, data.num_classes)
    load_model_weights(model, best_checkpoint(job.run_dir))
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    from convlens.data.augment import Augment
    prepare = Augment(job.data, *data.norm_stats()).eval
    cpu = evaluate(model, data.test_x, data.test_y, "supervised", data.num_classes, prepare, 256,
                   torch.device("cpu"))
    assert cpu["accuracy"] == pytest.approx(summary["test_accuracy"], abs=0.01)


def test_rotation_network_trains_on_the_gpu(tmp_path, cache_dir, ray_cluster):
    """Four rotations per image in one bf16 batch on the GPU; chance is 0.25."""
    from convlens.specs.base import validate
    from convlens.specs.train import TrainJob
    from convlens.training.run import train
    job = validate(TrainJob, tiny_spec(
        tmp_path / "runs", cache_dir, "gpu_rot", run={"use_gpu": True, "task": "rotation", "epochs": 3},
        data={"train_subset": 4096, "test_subset": 512, "batch_size": 128},
        model={"layers": [1, 1, 1], "width": 16}, optim={"lr": 0.1, "momentum": 0.9},
        schedule={"name": "onecycle"}))
    summary = train(job)
    assert read_attempts(job.run_dir)[0]["backend"] == "nccl"
    assert summary["test_accuracy"] > 0.6 and len(summary["per_class_test_accuracy"]) == 4


def test_analysis_tasks_share_the_gpu(gpu_run, tmp_path):
    from convlens.analysis.job import analyze
    from convlens.analysis.registry import names
    from convlens.specs.analyze import AnalyzeJob
    from convlens.specs.base import validate
    job, _ = gpu_run
    spec = {"name": "gpu", "out": str(tmp_path / "analysis"), "runs": [str(job.run_dir)], "epochs": ["best"],
            "gpus_per_task": 0.25, "quiet": True,
            "options": {"num_images": 32, "num_train": 128, "inversion_steps": 3, "tsne_points": 40, "topk": 3}}
    out = analyze(validate(AnalyzeJob, spec))
    files = json.loads((out / "index.json").read_text())["files"]
    assert {e["method"] for e in files} >= set(names())


def test_gpu_benchmark_runs(cache_dir, tmp_path):
    from convlens.bench.pipeline import run_bench
    from convlens.specs.bench import BenchJob
    from convlens.specs.train import DataConfig
    job = BenchJob(data=DataConfig(path=str(FMNIST), train_subset=1024, cache_dir=cache_dir), device="cuda",
                   batch_size=128, steps=3, warmup=1, loader_workers=2)
    result = run_bench(job)
    assert result["convlens"] > 0 and result["dataloader_pil"] > 0
