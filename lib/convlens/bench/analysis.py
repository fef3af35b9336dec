"""Images per second of every analysis method, on a random tiny ResNet.

python -m convlens.bench.analysis [--images 128] [--width 16] [--methods cam gradcam] [--device cuda]
                                  [--checkpoint runs/demo/supervised/checkpoint_epoch0005] [--captum]
Times `compute` only (drawing is reported separately): the numbers say how the maths scales.
--captum: CAM and Grad-CAM maps of convlens against Captum's LayerGradCam (optional extra
`bench`) on the same images, best of interleaved rounds, with the largest map difference.
"""
from __future__ import annotations

import argparse
import time

import matplotlib.pyplot as plt
import torch

from convlens.analysis import base, cam
from convlens.analysis.registry import load_all
from convlens.models.resnet import ResNet
from convlens.specs.analyze import AnalyzeOptions


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


def loaded(folder: str, images: int, device: str) -> base.Context:
    """A real checkpoint's model and test images (the issue's numbers are on the demo's)."""
    from pathlib import Path
    return base.build_context(Path(folder), AnalyzeOptions(num_images=images, num_train=64,
                                                           faithfulness_steps=16), device, title="bench")


def captum_gradcam(model, x: torch.Tensor, layer: str) -> torch.Tensor:
    """Captum's LayerGradCam as its users call it: predict, attribute, upsample, scale to [0, 1]."""
    from captum.attr import LayerAttribution, LayerGradCam
    with torch.no_grad():
        target = model(x).argmax(1)
    attr = LayerGradCam(model, base.module(model, layer)).attribute(x, target=target, relu_attributions=True)
    up = LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), "bilinear")[:, 0]
    return (up / up.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]).detach()


def versus_captum(ctx: base.Context, rounds: int = 5) -> dict:
    """images/s of convlens CAM and Grad-CAM (last stage) and of Captum, best of `rounds`
    interleaved rounds (the machine is shared), and the largest difference between the maps."""
    model, x, layer = ctx.model, ctx.norm(ctx.images), ctx.model.stage_names[-1]
    runs = {"convlens cam": lambda: cam.saliency(model, x, "cam", layer, layer)[0],
            "convlens gradcam": lambda: cam.saliency(model, x, "gradcam", layer, layer)[0],
            "captum LayerGradCam": lambda: captum_gradcam(model, x, layer)}
    best = {k: float("inf") for k in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            if ctx.device.type == "cuda":
                torch.cuda.synchronize(ctx.device)
            best[name] = min(best[name], time.perf_counter() - t0)
    maps = {k: fn() for k, fn in runs.items()}
    diff = max(float((maps[k] - maps["captum LayerGradCam"]).abs().max()) for k in list(runs)[:2])
    return {"images_per_second": {k: len(x) / v for k, v in best.items()}, "max_map_difference": diff}


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
    p.add_argument("--checkpoint", default=None, help="a checkpoint folder instead of a random network")
    p.add_argument("--captum", action="store_true", help="CAM / Grad-CAM against Captum's LayerGradCam")
    args = p.parse_args(argv)
    ctx = (loaded(args.checkpoint, args.images, args.device) if args.checkpoint
           else context(args.images, args.width, args.device))
    if args.captum:
        return [print_captum(versus_captum(ctx), len(ctx.images))]
    rows = []
    print(f"{'method':16s} {'images/s':>10s} {'compute s':>10s} {'draw s':>8s}   "
          f"({len(ctx.images)} images {ctx.images.shape[-2]}x{ctx.images.shape[-1]}, "
          f"ResNet {ctx.model.arch['layers']} width {ctx.model.arch['width']}, "
          f"{torch.get_num_threads()} threads, {args.device})")
    for name in args.methods or list(load_all()):
        r = measure(ctx, name)
        rows.append(r)
        print(f"{name:16s} {r['images_per_second']:10.1f} {r['compute_s']:10.2f} {r['draw_s']:8.2f}", flush=True)
    return rows


def print_captum(r: dict, images: int) -> dict:
    ref = r["images_per_second"]["captum LayerGradCam"]
    for name, ips in r["images_per_second"].items():
        print(f"{name:22s} {ips:10.1f} images/s  {ips / ref:5.2f}x Captum   ({images} images, "
              f"{torch.get_num_threads()} threads)")
    print(f"largest map difference to Captum: {r['max_map_difference']:.2e}")
    return r


if __name__ == "__main__":
    main()
