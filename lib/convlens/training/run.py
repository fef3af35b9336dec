"""`convlens train`: validate, start the Ray Train run, then write the run's final figures."""
from __future__ import annotations

import time
from pathlib import Path

import torch
import yaml

from convlens import checkpoint as ckpt
from convlens.config import ConfigError, TrainJob, check_data_path
from convlens.data import DataError, ImageData, load_dataset, split_indices
from convlens.models import build_model
from convlens.training import outputs, tasks
from convlens.training.evaluate import evaluate


class RunStopped(RuntimeError):
    """The run ended early for a reason retrying cannot fix (NaN loss, bad checkpoint)."""


def prepare(job: TrainJob, verbose: bool = True) -> tuple[TrainJob, ImageData]:
    """Every check that can fail before a worker starts: paths, data, sizes. Creates nothing."""
    job = job.model_copy(deep=True)
    job.run.root = str(Path(job.run.root).expanduser().resolve())
    check_data_path(job.data)
    data = load_dataset(job.data, verbose=verbose)
    n_train = len(split_indices(len(data.train_y), job.data.val_fraction, job.run.seed)[0])
    if n_train < job.data.batch_size:
        raise DataError(f"data.batch_size = {job.data.batch_size}: the training split has only {n_train} "
                        f"images, fewer than one batch ({job.data.batch_size // job.run.workers} per worker "
                        f"x {job.run.workers} workers)")
    if job.data.val_fraction > 0 and n_train == len(data.train_y):
        raise DataError(f"data.val_fraction = {job.data.val_fraction}: leaves an empty validation split")
    return job, data


def train(job: TrainJob, trainer_kwargs: dict | None = None) -> dict:
    """Run (or resume) the training run named job.run.name; returns summary.json's content."""
    from convlens.raycluster import check_fits, ensure_ray
    job, data = prepare(job, verbose=not job.run.quiet)
    ensure_ray(quiet=job.run.quiet)
    check_fits(job.run.workers, job.run.cpus_per_worker, job.run.use_gpu, "run")
    run_dir = job.run_dir
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        print(f"[convlens] {job.run.name} already finished: {summary_path}", flush=True)
        return outputs.read_json(summary_path)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(job.model_dump(mode="json"), sort_keys=False))
    start = time.time()
    stopped = run_dir / "stopped.json"
    stopped.unlink(missing_ok=True)
    fit(job, **(trainer_kwargs or {}))
    if stopped.is_file():  # written by rank 0 when the run ended on a non-retryable error
        raise RunStopped(f"run {job.run.name} stopped: {outputs.read_json(stopped)['stop_reason']}")
    summary = finalize(job, data, run_dir, time.time() - start)
    if not job.run.quiet:
        print(f"[convlens] {job.run.name}: best epoch {summary['best_epoch']} "
              f"(val acc {summary['best_val_accuracy']:.4f}), test acc {summary['test_accuracy']:.4f}; "
              f"outputs in {run_dir}", flush=True)
    return summary


# W&B settings from the user's shell reach the workers; the API key stays in the cluster's own
# environment so Ray never stores it.
FORWARDED_ENV = ("WANDB_MODE", "WANDB_BASE_URL", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_DIR")
# Ray Train's print patch sends a worker's print both to stdout and to its logger, and the
# driver shows both: every epoch line twice. Plain stdout is enough. WANDB_SERVICE empty: each
# worker starts its own W&B service, which dies with it; a service inherited from the process
# that started Ray would keep a killed worker's run open, and the retry's init would fail
# with "run ID ... is in use".
WORKER_ENV = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0", "WANDB_SERVICE": ""}


def fit(job: TrainJob, **run_config_extra):
    """Build and fit the TorchTrainer; raises ray.train.TrainingFailedError when retries run out."""
    import os
    import ray.train
    runtime_env = run_config_extra.pop("worker_runtime_env", {})
    env = {**{k: os.environ[k] for k in FORWARDED_ENV if k in os.environ},
           **runtime_env.get("env_vars", {}), **WORKER_ENV}
    run_config_extra["worker_runtime_env"] = {**runtime_env, "env_vars": env}
    from ray.train.torch import TorchConfig, TorchTrainer
    from convlens.training.loop import train_worker
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"job": job.model_dump(mode="json")},
        torch_config=TorchConfig(backend="nccl" if job.run.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=job.run.workers, use_gpu=job.run.use_gpu,
            resources_per_worker={"CPU": job.run.cpus_per_worker, **({"GPU": 1} if job.run.use_gpu else {})}),
        run_config=ray.train.RunConfig(
            name=job.run.name, storage_path=job.run.root,
            failure_config=ray.train.FailureConfig(max_failures=job.run.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=job.run.keep_last, checkpoint_score_attribute="epoch",
                checkpoint_score_order="max"),
            **run_config_extra),
    )
    return trainer.fit()


def finalize(job: TrainJob, data: ImageData, run_dir: Path, wall: float) -> dict:
    """Test the best checkpoint; write curves, per_class.csv and summary.json."""
    history = outputs.read_metrics(run_dir)
    best_dir = ckpt.best_checkpoint(run_dir)
    if best_dir is None or not history:
        raise RunStopped(f"run {job.run.name}: no verified best checkpoint in {run_dir}")
    test = test_checkpoint(best_dir, data, job)
    best = ckpt.read_manifest(best_dir)["epoch"]
    best_row = next(h for h in history if h["epoch"] == best)
    names = tasks.class_names(job.run.task, data.classes)
    outputs.plot_curves(history, run_dir, job.run.name)
    outputs.write_per_class(run_dir / "per_class.csv", names, best_row["val_per_class_accuracy"],
                            test["per_class_accuracy"])
    summary = {"run": job.run.name, "task": job.run.task, "dataset": job.data.dataset,
               "epochs": history[-1]["epoch"], "best_epoch": best,
               "best_val_accuracy": best_row["val_accuracy"], "test_accuracy": test["accuracy"],
               "test_loss": test["loss"], "per_class_test_accuracy": dict(zip(names, test["per_class_accuracy"])),
               "best_checkpoint": str(best_dir), "wall_seconds": wall,
               "train_seconds": sum(h["epoch_seconds"] for h in history), "workers": job.run.workers}
    outputs.write_json(run_dir / "summary.json", summary)
    from convlens.tracking import open_tracker
    tracker = open_tracker(job, run_dir, 0)
    tracker.log_summary(summary)
    tracker.finish()
    return summary


def test_checkpoint(folder: Path, data: ImageData, job: TrainJob) -> dict:
    """Evaluate a checkpoint on the test split (touched only here, for the final figures)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(job.model.model_copy(update={"pretrained": None}), data.in_chans,
                        tasks.num_outputs(job.run.task, data.num_classes))
    ckpt.load_model_weights(model, folder)
    mean, std = data.mean_std()
    mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(std, device=device).view(1, -1, 1, 1)
    return evaluate(model.to(device), data.test_x, data.test_y, job.run.task, model.arch["num_classes"],
                    mean, std, job.run.eval_batch_size, device)
