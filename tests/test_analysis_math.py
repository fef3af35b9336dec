"""The analysis maths against first principles: no Ray, no checkpoints, seconds on CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convlens.analysis import knn
from convlens.analysis import cam, deconv, embeddings
from convlens.analysis.registry import load_all
from convlens.models.resnet import ResNet


def tiny_resnet(seed=0, stem="cifar"):
    torch.manual_seed(seed)
    model = ResNet([1, 1], width=8, stem=stem, in_chans=1, num_classes=5).eval()
    for m in model.modules():  # non-trivial BN statistics, so folding matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.1, 0.1)
    return model


def test_cam_equals_gradcam_on_gap_linear_network():
    model = tiny_resnet()
    x = torch.randn(6, 1, 16, 16)
    feats = model.forward_features(x)  # (B, C, h, w), the GAP + linear head's input
    target = model(x).argmax(1)
    # CAM from first principles: sum_c w[target, c] * A_c
    by_hand = F.relu(torch.einsum("bchw,bc->bhw", feats, model.fc.weight[target])).detach()
    gc, _ = cam.saliency(model, x, "gradcam", "layer2", "layer2")
    cm, _ = cam.saliency(model, x, "cam", "layer2", "layer2")
    assert torch.allclose(gc, cm, atol=1e-5)
    # Grad-CAM's weights are the fc row divided by h*w: the same map up to a positive scale.
    out = cam.forward_backward(model, x, "layer2")
    h, w = out["acts"].shape[-2:]
    raw = cam.weighted_map(out["acts"], cam.gradcam_weights(out["grads"]))
    assert torch.allclose(raw * h * w, by_hand, atol=1e-5)
    assert (by_hand > 0).any()


def test_pick_per_class_orders_by_confidence():
    pred = np.array([0, 0, 1, 0, 1, 1])
    true = np.array([0, 0, 0, 1, 1, 1])
    conf = np.array([0.6, 0.9, 0.8, 0.7, 0.5, 0.95])
    got = cam.pick_per_class(pred, true, conf, n_classes=2, k=2)
    assert got.tolist() == [[1, 0, 2, -1], [5, 4, 3, -1]]


@pytest.mark.parametrize("pool", [(2, 2, 0), (3, 2, 1)])
def test_deconv_layer_matches_autograd_transposes(pool):
    """conv -> ReLU -> max-pool undone by the deconvnet equals: the max-pool's gradient
    (unpooling), ReLU applied to the signal, then the conv's input gradient (transposed conv)."""
    torch.manual_seed(1)
    x = torch.randn(2, 3, 11, 11, requires_grad=True)
    w = torch.randn(4, 3, 3, 3)
    stride, padding = 2, 1
    y = F.relu(F.conv2d(x, w, stride=stride, padding=padding))
    yd = y.detach().requires_grad_(True)
    p, switches = F.max_pool2d(yd, *pool, return_indices=True)
    signal = torch.randn_like(p)
    unpooled, = torch.autograd.grad(F.max_pool2d(yd, *pool), yd, signal)
    z = torch.randn(2, 3, 11, 11, requires_grad=True)
    expected, = torch.autograd.grad(F.conv2d(z, w, stride=stride, padding=padding), z, F.relu(unpooled))
    got = deconv.deconv_layer(signal, w, stride, padding, x.shape, switches, tuple(y.shape[-2:]))
    assert torch.allclose(got, expected, atol=1e-5)
    # and the same through F.conv_transpose2d, with the output padding the stride leaves over
    extra = x.shape[-1] - ((y.shape[-1] - 1) * stride - 2 * padding + w.shape[-1])
    via_t = F.conv_transpose2d(F.relu(unpooled), w, stride=stride, padding=padding, output_padding=extra)
    assert torch.allclose(got, via_t, atol=1e-5)


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_deconv_through_resnet_returns_pixels(stem):
    model = tiny_resnet(stem=stem)
    x = torch.randn(3, 1, 32, 32)
    acts, rec = deconv.record(model, x, upto=2)
    assert torch.allclose(acts, model.forward_features(x), atol=1e-5)
    outs = {m: deconv.project(model, rec, deconv.only_channel(acts, 0), 2, m) for m in deconv.MODES}
    for out in outs.values():
        assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(outs["residual"], outs["shortcut"])  # the paths see different things


def test_knn_retrieval_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    queries, keys = torch.randn(37, 16, generator=g), torch.randn(301, 16, generator=g)
    sims, idx = knn.top_k_cosine(queries, keys, k=7, chunk=10)
    qn = queries.numpy() / np.linalg.norm(queries.numpy(), axis=1, keepdims=True)
    kn = keys.numpy() / np.linalg.norm(keys.numpy(), axis=1, keepdims=True)
    full = qn @ kn.T
    brute = np.argsort(-full, axis=1)[:, :7]
    assert (idx.numpy() == brute).all()
    assert np.allclose(sims.numpy(), np.take_along_axis(full, brute, 1), atol=1e-5)


def test_knn_vote_weights_by_similarity():
    sims = torch.tensor([[0.9, 0.5, 0.45]])
    idx = torch.tensor([[0, 1, 2]])
    labels = torch.tensor([2, 1, 1])
    assert knn.knn_predict(sims, idx, labels, 3).tolist() == [1]  # 0.95 beats 0.9


def test_tsne_deterministic_for_a_seed():
    feats = np.random.default_rng(0).normal(size=(60, 8))
    a, b = embeddings.tsne(feats, seed=3), embeddings.tsne(feats, seed=3)
    assert a.shape == (60, 2) and np.array_equal(a, b)


def test_registry_lists_every_method_with_compute_and_draw():
    methods = load_all()
    assert {"filters", "feature_maps", "deconv", "inversion", "cam", "gradcam", "guided_backprop",
            "guided_gradcam", "embeddings", "knn", "examples", "confusion"} <= set(methods)
    for name, m in methods.items():
        assert m.name == name and callable(m.compute) and callable(m.draw) and m.caption
        assert m.title and m.explanation and set(m.describe()) >= {"title", "explanation", "caption"}
