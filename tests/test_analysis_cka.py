"""Linear CKA against first principles: the identities it must satisfy, independence near 0,
and the textbook full-batch formula on correlated features."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from convlens.analysis import cka


def features(n=512, d=40, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_cka_of_a_representation_with_itself_is_one():
    x = features()
    assert cka.cka(x, x, batch=64) == pytest.approx(1.0, abs=1e-9)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    x = features(d=30)
    q, _ = torch.linalg.qr(features(n=30, d=30, seed=1))
    y = x @ q[:, :30] * 7.5
    assert cka.cka(x, y, batch=64) == pytest.approx(1.0, abs=1e-9)
    z = torch.tanh(x[:, :10]) + 0.5 * features(d=10, seed=2)  # a partly shared representation
    assert cka.cka(x, z, batch=64) == pytest.approx(cka.cka(x @ q * 0.01, z * 3, batch=64), abs=1e-9)


def test_cka_of_independent_features_is_near_zero_even_in_high_dimension():
    x, y = features(n=512, d=1000, seed=3), features(n=512, d=1000, seed=4)
    assert abs(cka.cka(x, y, batch=128)) < 0.03
    # the biased (plain HSIC) estimator is far from 0 here: the unbiasing is doing the work
    xc, yc = x - x.mean(0), y - y.mean(0)
    biased = (yc.T @ xc).norm() ** 2 / ((xc.T @ xc).norm() * (yc.T @ yc).norm())
    assert biased > 0.3


def test_minibatch_cka_matches_the_full_batch_formula_on_correlated_features():
    x = features(n=2048, d=20, seed=5)
    y = torch.cat([x[:, :8] @ features(n=8, d=8, seed=6), features(n=2048, d=12, seed=7)], 1)
    xc, yc = x - x.mean(0), y - y.mean(0)  # Kornblith et al.'s linear CKA, eq. (5)
    full = float((yc.T @ xc).norm() ** 2 / ((xc.T @ xc).norm() * (yc.T @ yc).norm()))
    assert 0.2 < full < 0.9
    assert cka.cka(x, y, batch=256) == pytest.approx(full, abs=0.03)


def test_matrix_accumulator_agrees_with_pairwise_cka():
    xs = [features(n=256, d=d, seed=s) for d, s in ((5, 10), (9, 11))]
    ys = [xs[0] @ features(n=5, d=5, seed=12), features(n=256, d=7, seed=13)]
    acc = cka.MinibatchCKA(2, 2)
    for i in range(0, 256, 64):
        acc.update([x[i:i + 64] for x in xs], [y[i:i + 64] for y in ys])
    for i in range(2):
        for j in range(2):
            assert float(acc.value()[i, j]) == pytest.approx(cka.cka(xs[i], ys[j], batch=64), abs=1e-9)


def test_stage_by_stage_cka_of_real_networks():
    from convlens.analysis import similarity
    from test_analysis_methods import context
    a = similarity.representations(context("supervised"))
    other = context("supervised")
    torch.manual_seed(5)
    other.model.layer2[0].conv2.reset_parameters()  # the last stage changed, the first kept
    b = similarity.representations(other)
    same = similarity.matrix(a, a)
    assert np.allclose(np.diag(same), 1.0) and (same[~np.eye(2, dtype=bool)] < 1).all()
    changed = similarity.diagonal(a, b)
    assert changed["layer1"] == pytest.approx(1.0) and changed["layer2"] < 0.99
