"""`convlens bench`: training images/second of convlens's input pipeline vs the common baseline.

(a) convlens: uint8 tensors in memory, random crop/flip/normalize on whole batches.
(b) baseline: torchvision Dataset of PIL images + transforms (RandomCrop, RandomHorizontalFlip,
    ToTensor, Normalize) through a DataLoader with worker processes.
(c) the pure model step on a fixed batch, to express pipeline overhead.
Same model (and memory format), batch size and number of steps for all three. Prints figures;
asserts nothing.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from convlens.base.errors import ConfigError
from convlens.data.images import ImageData
from convlens.data.load import load_dataset
from convlens.specs.bench import BenchJob
from convlens.specs.train import TrainJob
from convlens.storage.files import write_atomic
from convlens.training.trainer import Trainer


def trainer_for(job: BenchJob, data: ImageData, device: torch.device, root: str) -> Trainer:
    """The Trainer a `convlens train` worker builds for this model, batch and device: the bench
    times its `step` and `batches`, the training step itself (nothing is written under root)."""
    train = TrainJob.model_validate({
        "run": {"root": root, "name": "bench", "epochs": 10_000, "channels_last": job.channels_last,
                "bf16": job.bf16, "compile": job.compile, "use_gpu": job.device == "cuda"},
        "data": {**job.data.model_dump(), "batch_size": job.batch_size, "val_fraction": 0.0},
        "model": job.model.model_dump(), "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
        "schedule": {"name": "constant"}})
    torch.manual_seed(0)
    return Trainer(train, data, device=device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(batches, step, steps: int, warmup: int, device: torch.device) -> float:
    """Images/second over `steps` steps after `warmup` untimed ones."""
    it = iter(batches)
    for _ in range(warmup):
        step(*next(it))
    sync(device)
    t0, n = time.perf_counter(), 0
    for _ in range(steps):
        x, y = next(it)
        step(x, y)
        n += len(y)
    sync(device)
    return n / (time.perf_counter() - t0)


def batch_ms(batches, n: int, device: torch.device) -> float:
    """Milliseconds to produce one batch, no model step."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        next(batches)
    sync(device)
    return (time.perf_counter() - t0) / n * 1000


def convlens_batches(trainer: Trainer):
    """As training does it: the uint8 dataset on the model's device, augmented there per batch."""
    epoch = 0
    while True:
        epoch += 1
        yield from trainer.batches(epoch)


class PILDataset(torch.utils.data.Dataset):
    def __init__(self, x, y, transform):
        from PIL import Image
        mode = "L" if x.shape[1] == 1 else "RGB"
        self.images = [Image.fromarray(img.permute(1, 2, 0).squeeze(-1).numpy(), mode) for img in x]
        self.labels, self.transform = y.tolist(), transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def baseline_batches(data, job, trainer: Trainer):
    from torchvision import transforms as T
    mean, std = data.mean_std()
    size = data.train_x.shape[-1]
    tf = T.Compose([T.RandomCrop(size, padding=job.data.crop_padding), T.RandomHorizontalFlip(),
                    T.ToTensor(), T.Normalize(mean, std)])
    loader = torch.utils.data.DataLoader(PILDataset(data.train_x, data.train_y, tf), batch_size=job.batch_size,
                                         shuffle=True, num_workers=job.loader_workers, drop_last=True,
                                         pin_memory=job.device == "cuda",
                                         persistent_workers=job.loader_workers > 0)
    while True:
        for x, y in loader:
            yield trainer.inputs(x.to(trainer.device, non_blocking=True), y.to(trainer.device, non_blocking=True))


def fixed_batches(trainer: Trainer):
    """One batch over and over: the pure model step."""
    x, y = next(trainer.batches(1))
    while True:
        yield x, y


def synthetic_data(shape: list[int], n: int) -> ImageData:
    """Random uint8 images: throughput does not depend on what the pixels show."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return ImageData(x, y, x[:1], y[:1], [str(c) for c in range(10)])


def run_bench(job: BenchJob) -> dict:
    torch.set_num_threads(job.threads)
    if job.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device = 'cuda': torch sees no CUDA GPU here; use device=cpu")
    device = torch.device(job.device)
    amp = job.device == "cuda" and job.bf16
    data = (synthetic_data(job.synthetic, job.data.train_subset or 8192) if job.synthetic
            else load_dataset(job.data, verbose=True))
    print(f"[bench] {len(data.train_y)} images of {list(data.train_x.shape[1:])}, batch {job.batch_size}, "
          f"model {job.model.layers} x {job.model.width}, {job.threads} threads, on "
          f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}"
          f"{', bf16' if amp else ''}{', channels_last' if job.channels_last else ''}"
          f"{', compiled' if job.compile else ''}", flush=True)
    trainers = {name: trainer_for(job, data, device, tempfile.gettempdir()) for name in job.sources}
    make = {"model_only": lambda t: fixed_batches(t), "convlens": lambda t: convlens_batches(t),
            "dataloader_pil": lambda t: baseline_batches(data, job, t)}
    sources = {name: make[name](trainers[name]) for name in make if name in job.sources}
    steps = {name: trainers[name].step for name in sources}
    # Rounds interleave the three, and each keeps its best round: on a shared machine the
    # noise only ever slows a round down.
    rounds = {name: [] for name in sources}
    for r in range(job.rounds):
        for name, source in sources.items():
            rounds[name].append(timed(source, steps[name], job.steps, job.warmup if r == 0 else 1, device))
    results = {name: max(values) for name, values in rounds.items()}
    for name, values in rounds.items():
        print(f"[bench] {name:15} {results[name]:8.0f} images/s (best of "
              f"{', '.join(f'{v:.0f}' for v in values)})", flush=True)
    if {"model_only", "convlens"} <= sources.keys():
        # The pipeline's own cost, timed alone: steadier than a difference of two noisy rates.
        results["convlens_batch_ms"] = batch_ms(sources["convlens"], job.steps, device)
        step_ms = 1000 * job.batch_size / results["model_only"]
        results["pipeline_overhead"] = results["model_only"] / results["convlens"] - 1
        print(f"[bench] convlens batch preparation alone: {results['convlens_batch_ms']:.2f} ms per batch "
              f"= {100 * results['convlens_batch_ms'] / step_ms:.1f}% of a {step_ms:.1f} ms model step; "
              f"pipeline overhead vs pure model step = {100 * results['pipeline_overhead']:.1f}%", flush=True)
    if {"convlens", "dataloader_pil"} <= sources.keys():
        results["speedup_vs_baseline"] = results["convlens"] / results["dataloader_pil"]
        print(f"[bench] convlens / baseline = {results['speedup_vs_baseline']:.2f}x", flush=True)
    if job.out:
        write_atomic(Path(job.out), json.dumps(results, indent=2).encode())
    return results
