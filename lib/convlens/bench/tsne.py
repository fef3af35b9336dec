"""scikit-learn's t-SNE vs openTSNE on the same penultimate features of a real checkpoint.

python -m convlens.bench.tsne CHECKPOINT_FOLDER [--points 2000 5000 10000] [--threads 2]
Prints seconds and trustworthiness (on a 2,000-point sample) for each, at the same number of
iterations. openTSNE is optional (`pip install openTSNE`). On the 2-core development machine
scikit-learn was faster up to 5k points and openTSNE about 10% faster at 10k, with the same
trustworthiness, so the embeddings method (hundreds to a few thousand points) uses scikit-learn.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.manifold import TSNE, trustworthiness

from convlens.analysis import base
from convlens.specs.analyze import AnalyzeOptions


ITERATIONS = 500  # in all, 250 of them early exaggeration (scikit-learn's split of max_iter)


def sklearn_tsne(feats: np.ndarray, seed: int, threads: int) -> np.ndarray:
    """Barnes-Hut gradients, O(N log N) per iteration."""
    return TSNE(2, perplexity=30.0, init="pca", random_state=seed, learning_rate="auto",
                max_iter=ITERATIONS, n_jobs=threads).fit_transform(feats)


def open_tsne(feats: np.ndarray, seed: int, threads: int) -> np.ndarray:
    """FFT-interpolated gradients (FIt-SNE), O(N) per iteration; the same iterations in all."""
    from openTSNE import TSNE as OpenTSNE
    return np.asarray(OpenTSNE(perplexity=30.0, initialization="pca", random_state=seed,
                               early_exaggeration_iter=250, n_iter=ITERATIONS - 250,
                               negative_gradient_method="fft", n_jobs=threads).fit(feats))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--points", type=int, nargs="+", default=[10_000])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    most = max(args.points)
    ctx = base.build_context(Path(args.checkpoint), AnalyzeOptions(num_images=most), "cpu")
    all_feats = base.features(ctx, ctx.images[:most]).astype(np.float32)
    impls = {"scikit-learn": sklearn_tsne, "openTSNE": open_tsne}
    for n in args.points:
        feats = all_feats[:n]
        sample = np.random.default_rng(0).choice(len(feats), min(2000, len(feats)), replace=False)
        print(f"{len(feats)} points x {feats.shape[1]} features from {args.checkpoint}, "
              f"{ITERATIONS} iterations, {args.threads} threads", flush=True)
        for name, fn in impls.items():
            try:
                start = time.perf_counter()
                xy = fn(feats, 0, args.threads)
            except ImportError:
                print(f"  {name:13} not installed")
                continue
            seconds = time.perf_counter() - start
            trust = trustworthiness(feats[sample], xy[sample], n_neighbors=10)
            print(f"  {name:13} {seconds:7.1f} s   trustworthiness {trust:.3f}", flush=True)


if __name__ == "__main__":
    main()
