"""Images per second of every analysis method, on a random tiny ResNet.

python -m convlens.bench.analysis [--images 128] [--width 16] [--methods cam gradcam] [--device cuda]
Times `compute` only (drawing is reported separately): the numbers say how the maths scales.
"""
from __future__ import annotations

import argparse
import time

import matplotlib.pyplot as plt
import torch

from convlens.analysis import base
from convlens.analysis.registry import load_all
from convlens.specs.analyze import AnalyzeOptions
from convlens.models import ResNet


def context(images: int, width: int, device: str = "cpu", size: int = 28) -> base.Context:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = ResNet([1, 1], width=width, in_chans=1, num_classes=10).eval().to(device)
    return base.Context(
        model=model, task="supervised", classes=[f"c{i}" for i in range(10)],
        head_classes=[f"c{i}" for i in range(10)],
        images=torch.randint(0, 256, (images, 1, size, size), generator=g, dtype=torch.uint8),
        labels=torch.arange(images) % 10, mean=torch.full((1, 1, 1, 1), 0.3), std=torch.full((1, 1, 1, 1), 0.35),
        opts=AnalyzeOptions(num_images=images, num_train=1024, tsne_points=min(images, 300)),
        train_images=torch.randint(0, 256, (1024, 1, size, size), generator=g, dtype=torch.uint8),
        train_labels=torch.arange(1024) % 10, title="bench", device=torch.device(device))


def measure(ctx: base.Context, name: str) -> dict:
    method = load_all()[name]
    t0 = time.perf_counter()
    result = method.compute(ctx)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    t1 = time.perf_counter()
    for panel in method.draw(result, ctx):
        plt.close(panel.figure)
    t2 = time.perf_counter()
    return {"method": name, "compute_s": t1 - t0, "draw_s": t2 - t1,
            "images_per_second": len(ctx.images) / max(t1 - t0, 1e-9)}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--methods", nargs="*", default=None)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = p.parse_args(argv)
    ctx = context(args.images, args.width, args.device)
    rows = []
    print(f"{'method':16s} {'images/s':>10s} {'compute s':>10s} {'draw s':>8s}   "
          f"({args.images} images 28x28, ResNet [1,1] width {args.width}, "
          f"{torch.get_num_threads()} threads, {args.device})")
    for name in args.methods or list(load_all()):
        r = measure(ctx, name)
        rows.append(r)
        print(f"{name:16s} {r['images_per_second']:10.1f} {r['compute_s']:10.2f} {r['draw_s']:8.2f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
