"""Deletion / insertion scoring against first principles: a random map's curves are their
expectation, an oracle map (brute-force effect of each pixel) beats it, ROAD's imputation
reproduces smooth images."""
from __future__ import annotations

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


def quadrant_images(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 noise with a bright 3x3 patch somewhere in one quadrant; the class is the quadrant."""
    y = torch.randint(0, 4, (n,), generator=g)
    x = 0.3 * torch.randn(n, 1, 8, 8, generator=g)
    r = torch.randint(0, 2, (n,), generator=g) + 4 * (y // 2)
    c = torch.randint(0, 2, (n,), generator=g) + 4 * (y % 2)
    for i in range(n):
        x[i, 0, r[i]:r[i] + 3, c[i]:c[i] + 3] += 2.0
    return x, y


def trained_tiny_model() -> torch.nn.Module:
    """A [1, 1] x 8 ResNet trained for seconds on the quadrant task (a random network's
    prediction hardly depends on its input, so nothing could be faithful to it)."""
    from convlens.models import ResNet
    torch.manual_seed(0)
    model = ResNet([1, 1], width=8, in_chans=1, num_classes=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        x, y = quadrant_images(64, g)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_oracle_map_beats_random_map_on_deletion():
    model = trained_tiny_model()
    x, y = quadrant_images(32, torch.Generator().manual_seed(1))
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
        assert (model(x).argmax(1) == y).float().mean() > 0.9
