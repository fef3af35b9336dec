"""One ResNet definition (He et al. 2016) for every variant convlens trains.

Parameter names follow torchvision (conv1, bn1, layer1..4, fc, downsample.0/1), so a
torchvision resnet18 state_dict loads into `resnet(layers=[2,2,2,2], width=64, stem="imagenet")`.
Analysis reads features through `forward_features` / `forward_head(pre_logits=True)`.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from convlens.base.errors import ConfigError


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut(in_ch, ch, stride)

    def residual(self, x):
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.residual(x) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, ch: int, stride: int = 1):
        super().__init__()
        out = ch * self.expansion
        self.conv1 = nn.Conv2d(in_ch, ch, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)
        self.conv3 = nn.Conv2d(ch, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut(in_ch, out, stride)

    def residual(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.bn3(self.conv3(x))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.residual(x) + identity)


def shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    def __init__(self, layers=(2, 2, 2, 2), width=64, block="basic", stem="cifar",
                 in_chans=3, num_classes=10):
        super().__init__()
        block_cls = BLOCKS[block]
        self.arch = dict(layers=list(layers), width=width, block=block, stem=stem,
                         in_chans=in_chans, num_classes=num_classes)
        if stem == "cifar":  # 3x3 stride 1, no max-pool: keeps 32x32 resolution
            self.conv1 = nn.Conv2d(in_chans, width, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:  # ImageNet stem: 7x7 stride 2 + 3x3 max-pool stride 2
            self.conv1 = nn.Conv2d(in_chans, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.frozen: list[str] = []  # parts kept fixed (freeze), by name
        in_ch = width
        self.stage_names = []
        for i, n_blocks in enumerate(layers):
            ch = width * 2 ** i
            blocks = []
            for j in range(n_blocks):
                blocks.append(block_cls(in_ch, ch, stride=2 if (i > 0 and j == 0) else 1))
                in_ch = ch * block_cls.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            self.stage_names.append(f"layer{i + 1}")
        self.num_features = in_ch
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def stages(self) -> list[nn.Module]:
        return [getattr(self, n) for n in self.stage_names]

    def part(self, name: str) -> list[nn.Module]:
        """The modules of a named part: "stem" (conv1, bn1) or a stage ("layer1", ...)."""
        return [self.conv1, self.bn1] if name == "stem" else [getattr(self, name)]

    def freeze(self, parts: list[str]) -> None:
        """Keep these parts fixed: no gradients, and their batch norms in eval mode (running
        statistics used, never updated) whatever train() is called with."""
        self.frozen = list(parts)
        for name in parts:
            for module in self.part(name):
                module.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen:
            for module in self.part(name):
                module.train(False)
        return self

    def forward_stem(self, x):
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_features(self, x, upto: int | None = None):
        """Feature map (B, C, H, W) after stage `upto` (1-based; default: the last)."""
        x = self.forward_stem(x)
        for stage in self.stages()[: upto or len(self.stage_names)]:
            x = stage(x)
        return x

    def forward_head(self, feats, pre_logits: bool = False):
        pooled = torch.flatten(self.avgpool(feats), 1)  # (B, C)
        return pooled if pre_logits else self.fc(pooled)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def build_model(cfg, in_chans: int, num_classes: int) -> ResNet:
    """ResNet from a ModelConfig; loads `cfg.pretrained` (torchvision format) when set."""
    model = ResNet(cfg.layers, cfg.width, cfg.block, cfg.stem, in_chans, num_classes)
    if cfg.pretrained:
        load_torchvision_weights(model, cfg.pretrained)
    return model


def load_torchvision_weights(model: ResNet, path: str) -> None:
    """Load a torchvision-style state_dict; a classifier of another size is left fresh."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.pretrained = {str(path)!r}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(f"model.pretrained = {str(path)!r}: not a readable state_dict ({err})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    if state.get("fc.weight") is not None and state["fc.weight"].shape != own["fc.weight"].shape:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing = sorted(set(own) - set(state) - {"fc.weight", "fc.bias"})
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
             for k, v in state.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or wrong:
        raise ConfigError(f"model.pretrained = {str(path)!r} does not fit this architecture "
                         f"{model.arch}: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                         f"shape mismatches {wrong[:5]}")
    own.update(state)
    model.load_state_dict(own, strict=True)
