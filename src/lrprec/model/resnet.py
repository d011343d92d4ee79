"""ResNet backbones with torchvision's layout and parameter names (He et al. 2016).

``conv1``, ``bn1``, ``layerN.M.conv1``/``bn1``…, ``layerN.M.downsample.0``/``.1`` and ``fc`` are
named as in ``torchvision.models.resnet``, so a local torchvision checkpoint
(``resnet18-f37072fd.pth``, ``resnet50-0676ba61.pth``; never downloaded) loads key for key.
Features are the globally pooled last stage (F = 512 or 2048); with ``out_dim`` set, ``fc``
is a learned bias-free Linear(width, out_dim) + ReLU on top (the small synthetic-catalog variant);
the ImageNet classifier ``fc`` of a checkpoint is never loaded into it.

Each block computes relu(main(x) + shortcut(x)); the LRP canonizer reads the two branches
through :meth:`ResidualBlock.main_leaves` / :meth:`ResidualBlock.shortcut_leaves` and makes
the sum an explicit step (``lrprec.explain.canonizers``).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lrprec.errors import UsageError
from lrprec.model.base import IMAGENET_MEAN, IMAGENET_STD, Backbone, load_state_file


class ResidualBlock(nn.Module):
    """Base of BasicBlock/Bottleneck: ``forward`` = relu(main + shortcut)."""

    expansion = 1
    convs: tuple[str, ...] = ()

    def main_leaves(self, prefix: str) -> list[tuple[str, nn.Module]]:
        """The main branch in execution order: conv, bn, relu, …, last conv, last bn (no final ReLU)."""
        out: list[tuple[str, nn.Module]] = []
        for i, name in enumerate(self.convs, 1):
            out += [(f"{prefix}conv{i}", getattr(self, f"conv{i}")), (f"{prefix}bn{i}", getattr(self, f"bn{i}"))]
            if i < len(self.convs):
                out.append((f"{prefix}relu", self.relu))
        return out

    def shortcut_leaves(self, prefix: str) -> list[tuple[str, nn.Module]]:
        """The shortcut: ``downsample.0`` (1×1 conv) and ``downsample.1`` (bn), or [] for the identity."""
        if self.downsample is None:
            return []
        return [(f"{prefix}downsample.{n}", m) for n, m in self.downsample.named_children()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for _, m in self.main_leaves(""):
            out = m(out)
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def _downsample(cin: int, cout: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(ResidualBlock):
    """Two 3×3 convolutions (ResNet-18/34)."""

    expansion = 1
    convs = ("3x3", "3x3")

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(inplanes, planes, stride)


class Bottleneck(ResidualBlock):
    """1×1, 3×3 (stride here, as torchvision's ResNet v1.5), 1×1 ×4 (ResNet-50/101)."""

    expansion = 4
    convs = ("1x1", "3x3", "1x1")

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = _downsample(inplanes, planes * 4, stride)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
#: name -> (block, blocks per stage, stage widths, ImageNet layout)
RESNETS = {
    "resnet18": ("basic", (2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet50": ("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512)),
    "resnet-small": ("basic", (1, 1, 1, 1), (16, 32, 64, 128)),
}


class ResNet(Backbone):
    """A torchvision-layout ResNet; ``out_dim=None`` gives the pooled features (F = widths[-1]·expansion)."""

    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, block: str = "basic", layers: tuple[int, ...] = (2, 2, 2, 2),
                 widths: tuple[int, ...] = (64, 128, 256, 512), out_dim: int | None = None, arch: str = "custom"):
        super().__init__()
        if block not in BLOCKS:
            raise UsageError(f"unknown ResNet block {block!r}; choose {', '.join(BLOCKS)}")
        if len(layers) != len(widths) or not layers or min(layers) < 1:
            raise UsageError(f"a ResNet needs one positive block count per stage width, got {layers} and {widths}")
        cls = BLOCKS[block]
        self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = widths[0]
        for i, (n, w) in enumerate(zip(layers, widths), 1):
            blocks = []
            for j in range(n):
                blocks.append(cls(cin, w, stride=(1 if i == 1 or j > 0 else 2)))
                cin = w * cls.expansion
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.n_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        # our own feature layer (not torchvision's classifier): bias-free, so ε/z⁺ relevance is conserved through it
        self.fc = nn.Linear(cin, out_dim, bias=False) if out_dim else nn.Identity()
        self.fc_relu = nn.ReLU() if out_dim else nn.Identity()
        self.out_dim = int(out_dim or cin)
        self.config = {"block": block, "layers": list(layers), "widths": list(widths), "out_dim": out_dim, "arch": arch}
        # channels-last weights match the channels-last activations: no weight reordering inside every convolution
        # (forward, backward and each LRP rule's pass), which costs more than small maps' arithmetic on a CPU
        self.to(memory_format=torch.channels_last)

    def leaves(self) -> list[tuple[str, nn.Module]]:
        """Modules in execution order for the LRP canonizer; residual blocks are single leaves."""
        out: list[tuple[str, nn.Module]] = [("conv1", self.conv1), ("bn1", self.bn1), ("relu", self.relu), ("maxpool", self.maxpool)]
        for i in range(1, self.n_stages + 1):
            out += [(f"layer{i}.{j}", b) for j, b in enumerate(getattr(self, f"layer{i}"))]
        return out + [("avgpool", self.avgpool), ("flatten", nn.Flatten()), ("fc", self.fc), ("fc_relu", self.fc_relu)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        for _, m in self.leaves():
            x = m(x)
        return x

    def load_torchvision(self, path: str | Path) -> list[str]:
        """Load a local torchvision ResNet state dict; returns the checkpoint keys left unused (e.g. ``fc.*``)."""
        state = load_state_file(path, "ResNet")
        own = self.state_dict()
        missing = [k for k in own if k not in state and not k.startswith("fc.")]
        if missing:
            raise UsageError(f"{path} is not a torchvision {self.config['arch']} state dict (missing {missing[:3]}...)")
        use = {k: state[k] for k in own if k in state and not k.startswith("fc.") and tuple(state[k].shape) == tuple(own[k].shape)}
        wrong = [k for k in own if k in state and k not in use and not k.startswith("fc.")]
        if wrong:
            raise UsageError(f"{path}: {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, expected {tuple(own[wrong[0]].shape)}")
        self.load_state_dict(use, strict=False)
        return [k for k in state if k not in use]


def build_resnet(name: str, out_dim: int | None = None, **config) -> ResNet:
    """``resnet18``, ``resnet50`` (torchvision layouts) or ``resnet-small`` (64 px catalogs; out_dim 256 by default)."""
    block, layers, widths = RESNETS[name]
    if name == "resnet-small" and out_dim is None and "out_dim" not in config:
        out_dim = 256
    config.pop("arch", None)
    return ResNet(config.pop("block", block), tuple(config.pop("layers", layers)), tuple(config.pop("widths", widths)),
                  out_dim=out_dim, arch=name, **config)
