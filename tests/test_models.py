"""The ResNet family: torchvision-compatible ResNet-18, slim variants, transfer loading."""
import pytest
import torch
import torchvision

from convlens.models.resnet import ResNet, build_model
from convlens.specs.train import ModelConfig


def test_resnet18_matches_torchvision_and_loads_its_weights(tmp_path):
    ours = ResNet([2, 2, 2, 2], 64, "basic", "imagenet", 3, 1000)
    ref = torchvision.models.resnet18()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    model = build_model(ModelConfig(stem="imagenet", pretrained=str(path)), 3, 10)  # new 10-class head
    x = torch.randn(2, 3, 64, 64)
    ref.eval(), model.eval()
    assert torch.allclose(model.forward_features(x), torch.nn.Sequential(*list(ref.children())[:-2])(x), atol=1e-5)
    assert model(x).shape == (2, 10)


def test_pretrained_of_other_shape_is_refused(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(ValueError, match="conv1.weight"):
        build_model(ModelConfig(stem="cifar", pretrained=str(path)), 3, 10)


@pytest.mark.parametrize("block, layers, stem, in_chans", [
    ("basic", [1, 1, 1], "cifar", 1), ("bottleneck", [1, 1], "cifar", 3), ("basic", [2, 2, 2, 2], "imagenet", 3)])
def test_variants_shapes(block, layers, stem, in_chans):
    m = ResNet(layers, 8, block, stem, in_chans, 7)
    x = torch.randn(3, in_chans, 32, 32)
    feats = m.forward_features(x)
    assert feats.shape[1] == m.num_features
    assert m.forward_head(feats, pre_logits=True).shape == (3, m.num_features)
    assert m(x).shape == (3, 7)
    assert m.forward_features(x, upto=1).shape[1] == 8 * (4 if block == "bottleneck" else 1)
