"""Deletion / insertion scoring against first principles: a random map's curves are their
expectation, an oracle map (brute-force effect of each pixel) beats it, ROAD's imputation
reproduces smooth images."""
from __future__ import annotations

import functools

import pytest
import torch

from convlens.analysis import perturb
from test_analysis_gradcam import trained_looking_resnet


def test_random_map_curves_match_their_expectation_on_a_linear_score():
    g = torch.Generator().manual_seed(0)
    b, h, w = 512, 8, 8
    x = 1 + torch.rand(b, 1, h, w, generator=g)
    weight = torch.linspace(2.0, 0.2, h)[:, None].expand(h, w)  # top rows count most: an order bias shows
    score = lambda batch: (batch[:, 0] * weight).sum((1, 2))  # noqa: E731
    steps = 8
    got = perturb.curves(score, x, {"random": torch.rand(b, h, w, generator=g)}, steps=steps)
    full = score(x)  # each pixel is removed with probability f: E[score] = (1 - f) * full (fill 0)
    f = torch.arange(steps + 1) / steps
    assert torch.allclose(got["deletion/random"].mean(0), (1 - f) * full.mean(), atol=0.4)
    assert torch.allclose(got["insertion/random"].mean(0), f * full.mean(), atol=0.4)
    assert abs(perturb.auc(got["deletion/random"]).mean() - full.mean() / 2) < 0.2
    # a map equal to the weights deletes the heavy rows first: far below the random curve
    ordered = perturb.curves(score, x, {"w": weight.expand(b, h, w)}, steps=steps)["deletion/w"].mean(0)
    assert (ordered[1:-1] < (1 - f[1:-1]) * full.mean() - 5).all()


def test_ranks_are_a_permutation_in_map_order():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.0], [3.0, 1.0, 2.0, 0.0]])
    r = perturb.ranks(scores, torch.Generator().manual_seed(0))
    assert r.tolist() == [[2, 0, 1, 3], [0, 2, 1, 3]]


MEAN, STD = 0.3, 0.35  # the normalization the tiny model is trained with


def quadrant_images(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 8x8 noise with a bright 3x3 patch somewhere in one quadrant; the class is the quadrant."""
    y = torch.randint(0, 4, (n,), generator=g)
    x = 60 + 20 * torch.randn(n, 1, 8, 8, generator=g)
    r = torch.randint(0, 2, (n,), generator=g) + 4 * (y // 2)
    c = torch.randint(0, 2, (n,), generator=g) + 4 * (y % 2)
    for i in range(n):
        x[i, 0, r[i]:r[i] + 3, c[i]:c[i] + 3] += 150
    return x.clamp(0, 255).to(torch.uint8), y


def normalized(x_u8: torch.Tensor) -> torch.Tensor:
    return (x_u8.float() / 255 - MEAN) / STD


@functools.cache
def trained_tiny_model() -> torch.nn.Module:
    """A [1, 1] x 8 ResNet trained for seconds on the quadrant task (a random network's
    prediction hardly depends on its input, so nothing could be faithful to it)."""
    from convlens.models.resnet import ResNet
    torch.manual_seed(0)
    model = ResNet([1, 1], width=8, in_chans=1, num_classes=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        x, y = quadrant_images(64, g)
        loss = torch.nn.functional.cross_entropy(model(normalized(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_oracle_map_beats_random_map_on_deletion():
    model = trained_tiny_model()
    x = normalized(quadrant_images(32, torch.Generator().manual_seed(1))[0])
    with torch.no_grad():
        logits = model(x)
        target = logits.argmax(1)
        drop = torch.empty(32, 64)
        for p in range(64):  # brute force: the target logit's drop when this pixel alone is removed
            xp = x.clone().flatten(2)
            xp[:, :, p] = 0
            drop[:, p] = logits.gather(1, target[:, None])[:, 0] - model(xp.view_as(x)).gather(1, target[:, None])[:, 0]
    maps = {"oracle": drop.view(32, 8, 8), "random": torch.rand(32, 8, 8, generator=torch.Generator().manual_seed(2))}
    score = perturb.target_probability(model, target)
    with torch.no_grad():
        got = perturb.curves(score, x, maps, steps=16)
    oracle, rand = perturb.auc(got["deletion/oracle"]), perturb.auc(got["deletion/random"])
    assert oracle.mean() < rand.mean() - 0.05, (oracle.mean(), rand.mean())
    assert (oracle < rand).float().mean() > 0.7
    assert torch.allclose(got["deletion/oracle"][:, 0], logits.softmax(1).gather(1, target[:, None])[:, 0])


def test_road_imputation_reproduces_a_smooth_image_and_keeps_the_rest():
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    x = (0.5 * xx + 0.3 * yy)[None, None].repeat(2, 3, 1, 1)  # a linear ramp, 3 channels
    removed = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    removed[:, :, 5:9, 6:10] = True
    filled = perturb.road_fill(x, removed, iters=200, noise=0.0)
    assert torch.equal(filled[~removed.expand_as(x)], x[~removed.expand_as(x)])
    assert (filled - x).abs().max() < 0.01  # linear imputation is exact on a linear function
    noisy = perturb.road_fill(x, removed, noise=0.05, generator=torch.Generator().manual_seed(0))
    assert 0.02 < (noisy - filled)[removed.expand_as(x)].std() < 0.08


def test_trained_model_learned_the_quadrants():  # else the oracle test above would prove nothing
    model = trained_tiny_model()
    x, y = quadrant_images(128, torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (model(normalized(x)).argmax(1) == y).float().mean() > 0.9


@pytest.mark.parametrize("fill", ["mean", "road"])
def test_faithfulness_method_separates_pixel_maps_from_a_random_map(fill):
    """The method as a user runs it, on a network whose evidence is known to be a small patch:
    the pixel-level maps (input gradient, guided backprop) find it, far better than a random map.
    (This tiny network's last stage sees the whole 8x8 image, and its CAM is one central blob
    whatever the patch's place: no better than random, which is what the method is for.)"""
    from convlens.analysis import base, faithfulness
    from convlens.specs.analyze import AnalyzeOptions
    images, labels = quadrant_images(64, torch.Generator().manual_seed(4))
    ctx = base.Context(model=trained_tiny_model(), task="supervised", classes=list("abcd"), head_classes=list("abcd"),
                       images=images, labels=labels, mean=torch.full((1, 1, 1, 1), MEAN),
                       std=torch.full((1, 1, 1, 1), STD), title="quadrants",
                       opts=AnalyzeOptions(num_images=64, faithfulness_steps=8, faithfulness_fill=fill))
    r = faithfulness.compute(ctx)
    for m in ("input_gradient", "guided_backprop"):
        assert r[f"deletion_auc_{m}"] < r["deletion_auc_random"] - 0.15, (m, r)
        # ROAD imputes a revealed pixel's neighbours from it, so on 8x8 images a few random pixels
        # already rebuild much of the patch: its insertion curves do not separate the maps here.
        if fill == "mean":
            assert r[f"insertion_auc_{m}"] > r["insertion_auc_random"] + 0.1, (m, r)
    assert r["deletion_auc_cam"] == pytest.approx(r["deletion_auc_gradcam"], abs=1e-4)  # same maps at the last stage
    assert r["most_faithful"] in faithfulness.SALIENCY and r["images"] == 64
    assert r["deletion_cam"][0] == pytest.approx(r["insertion_cam"][-1], abs=1e-4)  # both the whole image, batched differently
