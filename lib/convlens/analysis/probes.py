"""Feature evaluation of a checkpoint on the class labels (Gidaris et al. 2018, section 3).

Frozen features of a chosen stage feed (a) a linear probe, (b) a small MLP probe, and
(c) a weighted kNN classifier on cosine similarity (as in DINO's eval_knn). The backbone
only ever runs under no_grad in eval mode, so no probe can change it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from convlens.analysis.knn import knn_classify
from convlens.base.errors import CheckpointError
from convlens.data.images import batches
from convlens.models.resnet import ResNet
from convlens.specs.probe import ProbeJob
from convlens.storage import checkpoint as ckpt
from convlens.storage.files import write_atomic
from convlens.storage.restore import load_model_and_data
from convlens.storage.rundir import RunDir
from convlens.tracking.jobs import close_job, log_probe, open_linked_runs

BATCH = 512  # images per feature pass


@torch.no_grad()
def extract(model: ResNet, batches, stages: list[int], pool: int, prepare) -> tuple[dict, torch.Tensor]:
    """{stage: features (N, C*pool*pool) after it} and labels (N,) of (uint8 images, labels)
    batches, each batch read once for every stage; prepare: a uint8 batch -> the network's input
    (the run's evaluation view)."""
    model.eval()
    out, labels = {s: [] for s in stages}, []
    for x, y in batches:
        x = prepare(x)
        for s in stages:
            out[s].append(F.adaptive_avg_pool2d(model.forward_features(x, upto=s), pool).flatten(1))
        labels.append(y)
    return {s: torch.cat(f) for s, f in out.items()}, torch.cat(labels)


def fit_probe(head: torch.nn.Module, train_f, train_y, epochs: int, seed: int) -> torch.nn.Module:
    """Train `head` on fixed features with Adam; features are standardized first."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        head.train()
        for idx in torch.randperm(len(train_y), generator=g).split(256):
            loss = F.cross_entropy(head(train_f[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return head.eval()


def probe_heads(dim: int, num_classes: int) -> dict[str, torch.nn.Module]:
    return {"linear": torch.nn.Linear(dim, num_classes),
            "mlp": torch.nn.Sequential(torch.nn.Linear(dim, 256), torch.nn.BatchNorm1d(256),
                                       torch.nn.ReLU(), torch.nn.Linear(256, num_classes))}


def stage_features(model, data, stages: list[int], job: ProbeJob, prepare) -> tuple[tuple, tuple]:
    """((train features by stage, labels), (test ...)) of job.max_train seeded training images
    and the test split. data: ImageData or FolderImages, read a batch at a time (a streamed
    run's folder is never read whole, and each image is decoded once)."""
    n_all = len(data.labels("train"))
    idx = torch.randperm(n_all, generator=torch.Generator().manual_seed(job.seed))[:min(job.max_train or n_all, n_all)]
    test_idx = torch.arange(len(data.labels("test")))
    return (extract(model, batches(data, "train", idx, BATCH), stages, job.pool, prepare),
            extract(model, batches(data, "test", test_idx, BATCH), stages, job.pool, prepare))


def evaluate_stage(train_f, train_y, test_f, test_y, num_classes: int, job: ProbeJob) -> dict:
    """Test accuracy of the linear, MLP and kNN probes fitted on one stage's training features."""
    torch.manual_seed(job.seed)
    mu, sd = train_f.mean(0), train_f.std(0) + 1e-6
    train_z, test_z = (train_f - mu) / sd, (test_f - mu) / sd
    result = {"feature_dim": train_f.shape[1]}
    for name, head in probe_heads(train_f.shape[1], num_classes).items():
        fit_probe(head, train_z, train_y, job.probe_epochs, job.seed)
        with torch.no_grad():
            result[f"{name}_accuracy"] = float((head(test_z).argmax(1) == test_y).float().mean())
    preds = knn_classify(train_f, train_y, test_f, job.knn_k, job.knn_temperature, num_classes)
    result["knn_accuracy"] = float((preds == test_y).float().mean())
    return result


def best_to_probe(run_dir: Path) -> Path:
    """The run's newest best checkpoint, verified; a damaged one is refused rather than replaced
    by an older best, so the table always describes the run's best epoch."""
    bests = RunDir(run_dir).bests()
    if not bests:
        raise CheckpointError(f"{run_dir}: no {RunDir.BEST}* checkpoint to probe")
    ckpt.verify(bests[-1])
    return bests[-1]


def probe_run(run_dir: Path, job: ProbeJob, tracked=None) -> dict:
    """Probe the best checkpoint of one run at every requested stage; writes probes.json.
    tracked: the job's open W&B run for this network (tracking.jobs.open_linked_runs), or None."""
    run_dir = Path(run_dir)
    folder = best_to_probe(run_dir)
    loaded = load_model_and_data(folder)
    model = loaded.model
    for p in model.parameters():
        p.requires_grad_(False)
    stages = [s for s in job.stages if 1 <= s <= len(model.stage_names)]
    (train_f, train_y), (test_f, test_y) = stage_features(model, loaded.data, stages, job, loaded.prepare)
    n = loaded.data.num_classes
    results = {"run": run_dir.name, "task": loaded.task, "checkpoint": str(folder), "chance": 1 / n,
               "stages": {str(s): evaluate_stage(train_f[s], train_y, test_f[s], test_y, n, job) for s in stages}}
    results.update(log_probe(tracked, results))  # its own W&B run
    write_atomic(RunDir(run_dir) / RunDir.PROBES, json.dumps(results, indent=2).encode())
    return results


def probe(job: ProbeJob) -> list[dict]:
    begun = time.time()
    run_dirs = [Path(r) for r in job.runs]
    for run in run_dirs:  # every checkpoint checked before any probe trains
        best_to_probe(run)
    # each network's own W&B run, open for the whole job: its system metrics and console
    tracked = open_linked_runs("probe", run_dirs, "probe", None, job.model_dump(mode="json"), started=begun)
    done = False
    try:
        results = [probe_run(r, job, tracked.get(r)) for r in run_dirs]
        print(format_table(results), flush=True)
        done = True
    finally:
        close_job(tracked, failed=not done)
    return results


def format_table(results: list[dict]) -> str:
    """Test accuracy of each probe on each run's features, stage by stage, with chance."""
    lines = [f"{'run':24} {'task':10} {'stage':>5} {'linear':>8} {'mlp':>8} {'kNN':>8}"]
    for r in results:
        for stage, m in r["stages"].items():
            lines.append(f"{r['run']:24} {r['task']:10} {stage:>5} {m['linear_accuracy']:8.4f} "
                         f"{m['mlp_accuracy']:8.4f} {m['knn_accuracy']:8.4f}")
    if results:
        lines.append(f"{'chance':24} {'':10} {'':>5} " + f"{results[0]['chance']:8.4f} " * 3)
    return "\n".join(lines).rstrip()
