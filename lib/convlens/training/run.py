"""`convlens train`: validate, start the Ray Train run, then write the run's final figures."""
from __future__ import annotations

import re
import time

import torch
import yaml

from convlens.base.errors import DataError, JobFailed, RunStopped
from convlens.base.progress import progress_mode
from convlens.data import stream
from convlens.data.folder_index import index_folder
from convlens.data.images import ImageData, split_indices
from convlens.data.load import check_path, load_dataset
from convlens.data.stream import StreamedData
from convlens.raycluster.connect import WorkerLine, check_fits, ensure_ray, worker_resources
from convlens.raycluster.env import forwarded_env, log_level
from convlens.specs.train import TrainJob
from convlens.storage import checkpoint as ckpt
from convlens.storage.restore import load_model_and_data
from convlens.storage.rundir import RunDir
from convlens.tracking.tracker import close_run, open_driver, wandb_run_id
from convlens.training import curves, tasks
from convlens.training.evaluate import evaluate, evaluate_batches


def prepare(job: TrainJob, verbose: bool = True) -> tuple[TrainJob, ImageData]:
    """Every check that can fail before a worker starts: paths, data, sizes. Creates nothing but
    the dataset's files, downloaded into data.path when missing."""
    job = job.model_copy(deep=True)
    job.run.root = str(job.run_dir.parent)
    check_path(job.data)
    data = streamed_or_none(job, verbose) or load_dataset(job.data, verbose=verbose)
    n_all = len(data.index.train) if isinstance(data, StreamedData) else len(data.train_y)
    n_train = len(split_indices(n_all, job.data.val_fraction, job.run.seed)[0])
    if n_train < job.data.batch_size:
        raise DataError(f"data.batch_size = {job.data.batch_size}: the training split has only {n_train} "
                        f"images, fewer than one batch ({job.data.batch_size // job.run.workers} per worker "
                        f"x {job.run.workers} workers)")
    if job.data.val_fraction > 0 and n_train == n_all:
        raise DataError(f"data.val_fraction = {job.data.val_fraction}: leaves an empty validation split")
    return job, data


def streamed_or_none(job: TrainJob, verbose: bool) -> StreamedData | None:
    """An image folder's listing, when the run streams it (data.stream; the line says why)."""
    if job.data.dataset != "image_folder":
        return None
    index = index_folder(job.data)
    streams, why = stream.decide(job.data, index)
    if verbose:
        print(f"[convlens] {why}", flush=True)
    return StreamedData(index, job.data.image_size) if streams else None


def train(job: TrainJob, trainer_kwargs: dict | None = None, start_from: str | None = None) -> dict:
    """Run (or resume) the training run named job.run.name; returns summary.json's content.
    start_from: a checkpoint folder to start from while the run has none of its own (PBT's donor)."""
    begun = time.time()
    job, data = prepare(job, verbose=not job.run.quiet)
    ensure_ray(quiet=job.run.quiet, address=job.run.ray_address)
    check_fits(job.run)
    if isinstance(data, StreamedData):
        stream.check_cpus_left(job.run)
        data.measure()
    run = RunDir(job.run_dir)
    if run.finished():
        print(f"[convlens] {job.run.name} already finished: {run / RunDir.SUMMARY}", flush=True)
        return run.read_summary()
    run.path.mkdir(parents=True, exist_ok=True)
    run.mark_started(begun)
    (run / RunDir.CONFIG).write_text(yaml.safe_dump(job.model_dump(mode="json"), sort_keys=False))
    start = time.time()
    run.clear_stopped()
    driver = open_driver(job, run.path)  # offline: W&B's system monitor samples the whole job
    try:
        with WorkerLine(f"{job.run.name} epoch {job.run.epochs}/{job.run.epochs}:") as last_epoch:
            fit(job, start_from=start_from, streamed=data if isinstance(data, StreamedData) else None,
                **(trainer_kwargs or {}))
            stopped = run.read_stopped()  # written by rank 0 when the run ended on a non-retryable error
            if not stopped and not job.run.quiet:
                last_epoch.wait()  # rank 0's last epoch line before the summary (none if resumed after it)
        if stopped:
            close_run(job, run.path, tasks.class_names(job.run.task, data.classes),
                      stop_reason=stopped["stop_reason"], tracker=driver)
            raise RunStopped(f"run {job.run.name} stopped: {stopped['stop_reason']}")
        summary = finalize(job, data, run, time.time() - start, driver)
    finally:
        driver.finish(failed=True)  # only where close_run has not finished it: the job failed
    if not job.run.quiet:
        print(f"[convlens] {job.run.name}: best epoch {summary['best_epoch']} "
              f"(val acc {summary['best_val_accuracy']:.4f}), test acc {summary['test_accuracy']:.4f}; "
              f"outputs in {run.path}", flush=True)
    return summary


# Ray Train's print patch sends a worker's print both to stdout and to its logger, and the
# driver shows both: every epoch line twice. Plain stdout is enough. WANDB_SERVICE empty: each
# worker starts its own W&B service, which dies with it; a service inherited from the process
# that started Ray would keep a killed worker's run open, and the retry's init would fail
# with "run ID ... is in use".
WORKER_ENV = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0", "WANDB_SERVICE": ""}


def fit(job: TrainJob, start_from: str | None = None, streamed: StreamedData | None = None, **run_config_extra):
    """Build and fit the TorchTrainer; raises JobFailed when its retries run out. streamed: the
    workers take their shards of its Ray Datasets instead of loading the dataset."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from convlens.training.worker import train_worker
    runtime_env = run_config_extra.pop("worker_runtime_env", {})
    env = {**forwarded_env(), **runtime_env.get("env_vars", {}), **WORKER_ENV}
    run_config_extra["worker_runtime_env"] = {**runtime_env, "env_vars": env}
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"job": job.model_dump(mode="json"), "progress": progress_mode(job.run.quiet),
                           "start_from": start_from, "stream": streamed and streamed.worker_config(job)},
        **({"datasets": streamed.datasets(job), "dataset_config": stream.data_config(job.run)} if streamed else {}),
        torch_config=TorchConfig(backend="nccl" if job.run.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=job.run.workers, use_gpu=job.run.use_gpu,
            resources_per_worker=worker_resources(job.run), placement_strategy=job.run.placement.upper()),
        run_config=ray.train.RunConfig(
            name=job.run.name, storage_path=job.run.root,
            failure_config=ray.train.FailureConfig(max_failures=job.run.max_failures),
            logging_config=ray.train.LoggingConfig(log_level=log_level()),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=job.run.keep_last, checkpoint_score_attribute="epoch",
                checkpoint_score_order="max"),
            **run_config_extra),
    )
    try:
        return trainer.fit()
    except ray.train.TrainingFailedError as err:
        raise JobFailed(f"run {job.run.name} failed after {job.run.max_failures} retries "
                        f"(run.max_failures): {failure_summary(err)}") from err


def failure_summary(err: Exception) -> str:
    """One line of Ray Train's multi-line failure report: the first failed rank and its error
    (the exception line of a traceback, else the snippet's first line)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if re.match(r"\[Rank \d+ Error Snippet\]:", line)]
    if not starts:
        return lines[0] if lines else type(err).__name__
    rank = re.search(r"\d+", lines[starts[0]]).group()
    block = lines[starts[0] + 1:starts[1] if len(starts) > 1 else None] or ["(no message)"]
    raised = [line for line in block if re.match(r"[\w.]+(Error|Exception|Interrupt)\b.*:", line)]
    return f"rank {rank}: {(raised or block)[-1 if raised else 0]}"


def finalize(job: TrainJob, data: ImageData, run: RunDir, wall: float, tracker=None) -> dict:
    """Test the best checkpoint; write curves, per_class.csv and summary.json. tracker: the
    driver's open W&B segment that the closing write goes into (close_run opens one if None)."""
    history = run.read_metrics()
    best_dir = ckpt.best_checkpoint(run.path)
    if best_dir is None or not history:
        raise RunStopped(f"run {job.run.name}: no verified best checkpoint in {run.path}")
    test = test_checkpoint(best_dir, data, job)
    best = ckpt.read_manifest(best_dir)["epoch"]
    best_row = next(h for h in history if h["epoch"] == best)
    names = tasks.class_names(job.run.task, data.classes)
    curves.plot_curves(history, run, job.run.name)
    curves.write_per_class(run, names, best_row["val_per_class_accuracy"], test["per_class_accuracy"])
    summary = {"run": job.run.name, "task": job.run.task, "dataset": job.data.dataset,
               "epochs": history[-1]["epoch"], "best_epoch": best,
               "best_val_accuracy": best_row["val_accuracy"], "test_accuracy": test["accuracy"],
               "test_loss": test["loss"], "per_class_test_accuracy": dict(zip(names, test["per_class_accuracy"])),
               "best_checkpoint": str(best_dir), "wall_seconds": wall,
               "train_seconds": sum(h["epoch_seconds"] for h in history), "workers": job.run.workers,
               "wandb_run_id": wandb_run_id(job, run.path)}
    url = close_run(job, run.path, names, summary=summary, tracker=tracker)
    summary.update({"wandb_url": url} if url else {})
    run.write_summary(summary)
    return summary


def test_checkpoint(folder, data: ImageData, job: TrainJob) -> dict:
    """Evaluate a checkpoint on the test split (touched only here, for the final figures)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_model_and_data(folder, device, data=data)
    if isinstance(data, StreamedData):
        return evaluate_batches(loaded.model, data.test_batches(stream.eval_batch_size(job)), job.run.task,
                                loaded.model.arch["num_classes"], loaded.prepare, device)
    return evaluate(loaded.model, data.test_x, data.test_y, job.run.task, loaded.model.arch["num_classes"],
                    loaded.prepare, job.run.eval_batch_size, device)
