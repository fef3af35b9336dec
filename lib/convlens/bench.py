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
import time
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from convlens.config import DataConfig, ModelConfig, Strict
from convlens.data import ImageData, load_dataset
from convlens.data.augment import augment, epoch_plan
from convlens.models import build_model


class BenchJob(Strict):
    kind: Literal["bench"] = "bench"
    data: DataConfig = Field(default_factory=lambda: DataConfig(train_subset=8192))
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(layers=[1, 1, 1], width=16))
    batch_size: int = Field(128, gt=0)
    steps: int = Field(40, gt=0)  # per round
    rounds: int = Field(3, gt=0)
    warmup: int = Field(5, ge=0)
    loader_workers: int = Field(2, ge=0)  # baseline DataLoader processes
    threads: int = Field(2, gt=0)  # torch intra-op threads for the model
    channels_last: bool = True  # the model's memory format, as run.channels_last in training (all three)
    device: Literal["cpu", "cuda"] = "cpu"  # cuda: model, in-memory dataset and augmentation on the GPU
    bf16: bool = True  # autocast, as run.bf16 in training (cuda only)
    compile: bool = False  # torch.compile the model, as run.compile in training
    sources: list[Literal["model_only", "convlens", "dataloader_pil"]] = Field(
        default_factory=lambda: ["model_only", "convlens", "dataloader_pil"], min_length=1)
    # [C, H, W]: random uint8 images of this shape (data.train_subset of them, 10 classes) instead
    # of data.path; [3, 32, 32] is CIFAR-10's shape, for where CIFAR-10 cannot be downloaded.
    synthetic: list[int] | None = Field(None, min_length=3, max_length=3)
    out: str | None = None  # also write the figures as JSON here


def step_fn(model, opt, channels_last: bool, device: torch.device, amp: bool):
    def step(x, y):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


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


def convlens_batches(data, job, mean, std):
    """As training does it: the uint8 dataset on the model's device, augmented there per batch."""
    pad, device = job.data.crop_padding, mean.device
    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    epoch = 0
    while True:
        epoch += 1
        plan = epoch_plan(len(data.train_y), pad, True, 0, epoch).to(device)
        for start in range(0, len(plan.order) - job.batch_size + 1, job.batch_size):
            sl = slice(start, start + job.batch_size)
            idx = plan.order[sl]
            yield augment(train_x[idx], plan.shifts[sl], plan.flips[sl], pad, mean, std), train_y[idx]


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


def baseline_batches(data, job, mean, std):
    from torchvision import transforms as T
    size = data.train_x.shape[-1]
    tf = T.Compose([T.RandomCrop(size, padding=job.data.crop_padding), T.RandomHorizontalFlip(),
                    T.ToTensor(), T.Normalize(mean, std)])
    loader = torch.utils.data.DataLoader(PILDataset(data.train_x, data.train_y, tf), batch_size=job.batch_size,
                                         shuffle=True, num_workers=job.loader_workers, drop_last=True,
                                         pin_memory=job.device == "cuda",
                                         persistent_workers=job.loader_workers > 0)
    while True:
        yield from loader


def fixed_batches(data, job, mean, std):
    x = augment(data.train_x[:job.batch_size].to(mean.device), torch.zeros(job.batch_size, 2, dtype=torch.long),
                torch.zeros(job.batch_size, dtype=torch.bool), 0, mean, std)
    y = data.train_y[:job.batch_size].to(mean.device)
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
        raise ValueError("device: 'cuda' but torch sees no CUDA GPU here; use device=cpu")
    device = torch.device(job.device)
    amp = job.device == "cuda" and job.bf16
    data = (synthetic_data(job.synthetic, job.data.train_subset or 8192) if job.synthetic
            else load_dataset(job.data, verbose=True))
    print(f"[bench] {len(data.train_y)} images of {list(data.train_x.shape[1:])}, batch {job.batch_size}, "
          f"model {job.model.layers} x {job.model.width}, {job.threads} threads, on "
          f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}"
          f"{', bf16' if amp else ''}{', channels_last' if job.channels_last else ''}"
          f"{', compiled' if job.compile else ''}", flush=True)
    mean_l, std_l = data.mean_std()
    mean = torch.tensor(mean_l, device=device).view(1, -1, 1, 1)
    std = torch.tensor(std_l, device=device).view(1, -1, 1, 1)
    make = {"model_only": lambda: fixed_batches(data, job, mean, std),
            "convlens": lambda: convlens_batches(data, job, mean, std),
            "dataloader_pil": lambda: baseline_batches(data, job, mean_l, std_l)}
    sources = {name: make[name]() for name in make if name in job.sources}
    steps = {}
    for name in sources:
        torch.manual_seed(0)
        model = build_model(job.model, data.in_chans, data.num_classes).to(device)
        if job.channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        if job.compile:
            model = torch.compile(model)
        steps[name] = step_fn(model, opt, job.channels_last, device, amp)
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
        from convlens.checkpoint import write_atomic
        write_atomic(Path(job.out), json.dumps(results, indent=2).encode())
    return results
