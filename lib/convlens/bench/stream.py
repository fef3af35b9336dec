"""`python -m convlens.bench.stream`: the streamed image-folder path (data.stream) against the
in-memory one, as real `convlens train` runs through Ray. Prints figures; asserts nothing.

(a) Fashion-MNIST exported as PNGs (train/ and test/ class folders, 70k files): the same model
    trained in memory and streamed; images/s of each and their ratio.
(b) a generated 224 px JPEG folder whose decoded training split is at least 3x
    data.memory_budget_gb, streamed: images/s, time to the first batch, each worker's peak
    resident memory against the budget.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from convlens.specs.train import DEBIAN_FASHION_MNIST, TrainJob


def export_fashion_mnist(out: Path, source: str, cache_dir: str) -> Path:
    """Fashion-MNIST as PNGs under out/{train,test}/<class>/ (kept: a second call reuses them)."""
    from PIL import Image
    from convlens.data.load import load_dataset
    from convlens.specs.train import DataConfig
    if (out / "done").is_file():
        return out
    data = load_dataset(DataConfig(dataset="fashion_mnist", path=source, download=False, cache_dir=cache_dir))
    for split, x, y in (("train", data.train_x, data.train_y), ("test", data.test_x, data.test_y)):
        for c in range(data.num_classes):
            (out / split / f"{c:02d}").mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(x[:, 0].numpy(), y.tolist())):
            Image.fromarray(image).save(out / split / f"{label:02d}" / f"{i:05d}.png")
    (out / "done").write_text("")
    return out


def generate_jpegs(out: Path, count: int, classes: int = 10, size: int = 256) -> Path:
    """`count` JPEGs of smooth random colour fields (decode like photos, compress like them)."""
    from PIL import Image
    if (out / "done").is_file():
        return out
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = out / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((size, size), Image.BICUBIC).save(folder / f"{i:06d}.jpg", quality=85)
    (out / "done").write_text("")
    return out


def train_job(root: str, name: str, data: dict, run: dict, model: dict) -> TrainJob:
    return TrainJob.model_validate({
        "run": {"root": root, "name": name, "epochs": 1, "quiet": True, "precise_bn_images": 0, **run},
        "data": {"dataset": "image_folder", "cache_dir": str(Path(root) / "cache"), **data},
        "model": model, "optim": {"lr": 0.05}, "schedule": {"name": "constant"},
        "tracking": {"mode": "disabled"}})


def epoch_figures(job: TrainJob) -> dict:
    from convlens.storage.rundir import RunDir
    return RunDir(job.run_dir).read_metrics()[-1]


def bench_fashion_mnist(work: Path, args) -> None:
    from convlens.training.run import train
    folder = export_fashion_mnist(work / "fmnist-png", args.fashion_mnist, str(work / "cache"))
    data = {"path": str(folder), "image_size": 28, "batch_size": 128}
    model = {"layers": [1, 1], "width": 16}
    rates = {}
    for stream in (False, True):
        job = train_job(str(work / "runs"), f"fmnist-{'stream' if stream else 'memory'}",
                        {**data, "stream": stream}, {"epochs": args.epochs}, model)
        train(job)
        rates[stream] = epoch_figures(job)["images_per_second"]
    print(f"(a) Fashion-MNIST, 70k PNGs, ResNet [1, 1] width 16, batch 128, epoch {args.epochs}: "
          f"in memory {rates[False]:.0f} img/s, streamed {rates[True]:.0f} img/s, "
          f"ratio {rates[True] / rates[False]:.2f}", flush=True)


def bench_large_folder(work: Path, args) -> None:
    from convlens.training.run import train
    count = int(np.ceil(3 * args.budget_gb * 1e9 / (3 * 224 * 224) / 0.8))  # 80% of the files train
    folder = generate_jpegs(work / f"jpeg-{count}", count)
    job = train_job(str(work / "runs"), "large-stream",
                    {"path": str(folder), "image_size": 224, "batch_size": 32, "memory_budget_gb": args.budget_gb,
                     "crop_padding": 0},
                    # width 16: at width 8 the 1x1 stride-2 shortcut's backward (8 channels in, 56 px,
                    # channels_last) segfaults in oneDNN's AVX-512 kernel (torch 2.14.1), killing the worker
                    {"steps_per_epoch": args.steps}, {"layers": [1, 1], "width": 16, "stem": "imagenet"})
    began = time.time()
    train(job)
    m = epoch_figures(job)
    decoded = 0.8 * count * 3 * 224 * 224 / 1e9
    print(f"(b) {count} generated 224 px JPEGs ({decoded:.2f} GB decoded training split, "
          f"data.memory_budget_gb {args.budget_gb}), {args.steps} steps of 32: {m['images_per_second']:.0f} img/s, "
          f"first batch after {m['first_batch_seconds']:.1f} s, worker peak RSS {m['peak_rss_gb']} GB "
          f"(goal below {args.budget_gb + 1.5:.1f}); run {time.time() - began:.0f} s", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m convlens.bench.stream", description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["a", "b", "both"], default="both")
    parser.add_argument("--work", help="folder for the exported images and runs (default: a temporary one)")
    parser.add_argument("--fashion-mnist", default=DEBIAN_FASHION_MNIST)
    parser.add_argument("--epochs", type=int, default=2, help="(a): epochs; the last one's rate is compared")
    parser.add_argument("--budget-gb", type=float, default=0.5, help="(b): data.memory_budget_gb")
    parser.add_argument("--steps", type=int, default=60, help="(b): training steps")
    args = parser.parse_args(argv)
    from convlens.raycluster.env import prepare_environment
    prepare_environment()  # before ray is imported: Ray Train V2, quiet Ray Data
    with tempfile.TemporaryDirectory(prefix="convlens-bench-stream-") as tmp:
        work = Path(args.work or tmp)
        if args.case in ("a", "both"):
            bench_fashion_mnist(work, args)
        if args.case in ("b", "both"):
            bench_large_folder(work, args)


if __name__ == "__main__":
    main()
