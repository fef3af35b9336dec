"""Grad-CAM at any layer against an independent implementation, and what a saliency pass
leaves behind on the model (nothing: no .grad, the same mode in every sub-module)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from convlens.analysis import cam
from convlens.models.resnet import ResNet


def trained_looking_resnet(stem: str, seed: int = 0) -> ResNet:
    torch.manual_seed(seed)
    model = ResNet([1, 1, 1], width=8, stem=stem, in_chans=1, num_classes=5)
    for m in model.modules():  # BN statistics away from identity, so post-ReLU differs from BN output
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def gradcam_by_hand(model: ResNet, x: torch.Tensor, layer: str) -> torch.Tensor:
    """Selvaraju et al. on a copy whose ReLUs are out-of-place, with full backward and .grad:
    the named module's true output A and dS/dA, map = ReLU(sum_c mean(dS/dA_c) A_c), bilinear,
    divided by its max."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    seen = {}
    dict(model.named_modules())[layer].register_forward_hook(lambda mod, i, o: seen.setdefault("a", o))
    logits = model(x)
    a = seen["a"]
    a.retain_grad()
    logits.gather(1, logits.argmax(1)[:, None]).sum().backward()
    raw = F.relu((a.grad.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
    up = F.interpolate(raw, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return a.detach(), a.grad, (up / up.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]).detach()


@pytest.mark.parametrize("stem,layer", [("cifar", "layer2.0.bn1"), ("imagenet", "bn1"),
                                        ("cifar", "layer3.0.bn1"), ("imagenet", "layer2")])
def test_gradcam_at_any_layer_matches_an_independent_implementation(stem, layer):
    model = trained_looking_resnet(stem)
    x = torch.randn(8, 1, 32, 32)
    acts, grads, expected = gradcam_by_hand(model, x, layer)
    got, out = cam.saliency(model, x, "gradcam", layer, model.stage_names[-1])
    assert torch.allclose(out["acts"], acts, atol=1e-5)  # the named module's own output ...
    assert torch.allclose(out["grads"], grads, atol=1e-6)  # ... and the score's gradient there
    assert expected.amax((1, 2)).gt(0).any()  # a real map, not all zeros
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    assert out["acts"].lt(0).any() == layer.endswith("bn1")  # a batch norm's output, before its ReLU


def test_saliency_leaves_no_grad_and_the_mode_it_found():
    model = trained_looking_resnet("cifar").train()
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(4, 1, 16, 16)
    for kind in cam.KINDS:
        for _ in range(2):
            maps, _ = cam.saliency(model, x, kind, "layer2", model.stage_names[-1])
        assert torch.isfinite(maps).all()
    assert model.training  # left as found ...
    assert all(p.grad is None and p.requires_grad for p in model.parameters())  # ... with nothing accumulated
    for k, v in model.state_dict().items():  # eval inside: running statistics untouched
        assert torch.equal(v, before[k]), k
    eval_maps, _ = cam.saliency(model.eval(), x, "gradcam", "layer2", "layer3")
    train_maps, _ = cam.saliency(model.train(), x, "gradcam", "layer2", "layer3")
    assert torch.equal(eval_maps, train_maps)


def modes(model: torch.nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


def test_frozen_eval_gives_back_every_sub_modules_own_mode():
    """A training model with parts in eval mode: the frozen stem and layer1 (model.freeze), a
    batch norm put in eval by hand, and a plain nn.Sequential without ResNet's train() override
    around it. Saliency passes (eval inside) leave each module in the mode it had."""
    resnet = trained_looking_resnet("cifar")
    resnet.freeze(["stem", "layer1"])
    wrapped = torch.nn.Sequential(torch.nn.BatchNorm2d(1), resnet).train()
    wrapped[0].eval(), resnet.layer2[0].bn2.eval()
    for model in (resnet, wrapped):
        before = modes(model)
        assert not all(before.values()) and any(before.values())
        with cam.frozen_eval(model):
            assert not any(modes(model).values())
        assert modes(model) == before
    before = modes(resnet)
    for kind in cam.KINDS:
        cam.saliency(resnet, torch.randn(2, 1, 16, 16), kind, "layer2", resnet.stage_names[-1])
    assert modes(resnet) == before
