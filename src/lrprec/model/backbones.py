"""Image backbones f: image -> features x in R^F.

SmallCNN and VGG-16 follow torchvision's layout (``features``, ``avgpool``, ``classifier``), and
VGG-16's parameter names (``features.N``, ``classifier.N``)
match torchvision checkpoints exactly; ResNets (:mod:`lrprec.model.resnet`) and ViTs
(:mod:`lrprec.model.vit`) keep torchvision's names too and list their modules for the LRP
canonizer with ``leaves()``. Inputs are normalized float images (see
:func:`preprocess`); the first layer's value range is ``input_bounds()`` (for the zB rule).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from lrprec.errors import UsageError
from lrprec.model.base import IMAGENET_MEAN, IMAGENET_STD, Backbone, load_state_file  # noqa: F401 (re-exported)
from lrprec.model.resnet import RESNETS, build_resnet
from lrprec.model.vit import VITS, build_vit


class ScaleNorm2d(nn.BatchNorm2d):
    """BatchNorm that only scales: y = γ · x / √(E[x²] + eps) per channel, no centring and no shift.

    Folded into the preceding convolution it is a pure per-channel scale (no bias), so LRP
    rules that conserve on bias-free layers conserve through it. ``running_var`` tracks the
    uncentred second moment; ``running_mean`` stays 0 (the canonizer folds it as usual).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True)
        self.bias = None  # type: ignore[assignment]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """γ · x / √(E[x²] + eps) per channel for x (B, C, H, W): the batch's second moment in training (tracked in ``running_var``), the running one in eval."""
        if self.training:
            ms = x.pow(2).mean((0, 2, 3))
            with torch.no_grad():
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * ms.detach())
                self.num_batches_tracked.add_(1)
        else:
            ms = self.running_var
        return x * (self.weight * torch.rsqrt(ms + self.eps)).view(1, -1, 1, 1)


NORMS = ("batch", "scale", "none")


class SmallCNN(Backbone):
    """A compact CNN (the default) that trains end-to-end on 2 CPU cores in minutes at 64 px.

    ``batchnorm``: True/"batch" (BatchNorm2d), "scale" (:class:`ScaleNorm2d`, bias-free once
    folded) or False/"none". With ``bias=False`` and ``batchnorm`` "scale" or "none" every
    layer is bias-free after canonization, so LRP-0/ε/γ/zᴮ relevance is conserved.
    """

    def __init__(self, channels: tuple[int, int, int, int] = (16, 32, 64, 128), out_dim: int = 256, bias: bool = True,
                 batchnorm: bool | str = True, pool: str = "max"):
        super().__init__()
        norm = {True: "batch", False: "none"}.get(batchnorm, batchnorm) if isinstance(batchnorm, bool) else batchnorm
        if norm not in NORMS:
            raise UsageError(f"batchnorm must be true, false or one of {', '.join(NORMS)}; got {batchnorm!r}")
        c1, c2, c3, c4 = channels
        layers: list[nn.Module] = []

        def block(cin: int, cout: int, k: int, stride: int, pool: bool) -> None:
            layers.append(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias and norm == "none"))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(cout))
            elif norm == "scale":
                layers.append(ScaleNorm2d(cout))
            layers.append(nn.ReLU())
            if pool:
                layers.append(nn.MaxPool2d(2))

        # Pool early: at 64 px the maps are 16, 8, 4 and 4 pixels wide after each block, which
        # (with channels-last memory) makes a step ~10x cheaper than pooling late, at no loss here.
        block(3, c1, 5, 2, True)
        block(c1, c2, 3, 1, True)
        block(c2, c3, 3, 1, True)
        block(c3, c4, 3, 1, False)
        self.features = nn.Sequential(*layers)
        # Global max pooling (default) finds a small mark anywhere in the image; average
        # pooling dilutes it by the image area. (The attribute keeps torchvision's name.)
        if pool not in ("max", "avg"):
            raise UsageError(f"pool must be max or avg, got {pool!r}")
        self.avgpool = nn.AdaptiveMaxPool2d(1) if pool == "max" else nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(c4, out_dim, bias=bias), nn.ReLU())
        self.out_dim = out_dim
        self.config = {"channels": list(channels), "out_dim": out_dim, "bias": bias, "batchnorm": batchnorm, "pool": pool}
        self.features.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features (B, F) of preprocessed images x (B, 3, H, W), run channels-last."""
        # channels-last convolutions are several times faster on CPU for these sizes
        return super().forward(x.contiguous(memory_format=torch.channels_last))


VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16(Backbone):
    """VGG-16 with torchvision's parameter names; features are fc7 (``classifier.0-5``), F = 4096.

    ``classifier.6`` (the ImageNet 1000-way layer) is not part of the feature extractor, so
    torchvision checkpoints load with ``strict=False`` semantics for that layer only.
    """

    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, out_dim: int = 4096):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(4096, out_dim), nn.ReLU(), nn.Dropout(0.5),
        )
        self.out_dim = out_dim
        self.config = {"out_dim": out_dim}

    def load_torchvision(self, path: str | Path) -> list[str]:
        """Load a local torchvision ``vgg16`` state dict (e.g. ``vgg16-397923af.pth``); returns ignored keys."""
        state = load_state_file(path, "VGG-16 (torchvision's vgg16-397923af.pth)")
        own = self.state_dict()
        ignored = [k for k in state if k not in own]
        missing = [k for k in own if k not in state]
        if missing:
            raise UsageError(f"{path} is not a torchvision VGG-16 state dict (missing {missing[:3]}...)")
        for k in own:
            if tuple(state[k].shape) != tuple(own[k].shape):
                raise UsageError(f"{path}: {k} has shape {tuple(state[k].shape)}, expected {tuple(own[k].shape)}")
        self.load_state_dict({k: state[k] for k in own})
        return ignored


def hub_weights(name: str) -> Path | None:
    """A torchvision checkpoint (``name``-*.pth) in the local torch hub cache, if one is there (never downloads)."""
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    found = sorted(hub.glob(f"{name}-*.pth")) if hub.is_dir() else []
    return found[0] if found else None


def hub_vgg16_weights() -> Path | None:
    """The torchvision VGG-16 checkpoint in the local torch hub cache, if one is there (never downloads)."""
    return hub_weights("vgg16")


class FeatureBackbone(Backbone):
    """Features mode ([M15]): the input already is the feature vector; the backbone is the identity."""

    kind = "features"

    def __init__(self, out_dim: int):
        super().__init__()
        self.features = nn.Identity()
        self.avgpool = nn.Identity()
        self.classifier = nn.Identity()
        self.out_dim = out_dim
        self.config = {"out_dim": out_dim}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Precomputed features (B, F), returned unchanged."""
        return x


#: every backbone name ``build_backbone`` knows (``*-small``: sized for the 64 px synthetic catalog)
BACKBONES = ("small", "vgg16", "resnet18", "resnet50", "resnet-small", "vit-b16", "vit-small", "features")
#: the input side a backbone is trained at unless ``--input-size`` says otherwise (None: the catalog's own)
DEFAULT_INPUT_SIZE = {"vgg16": 224, "resnet18": 224, "resnet50": 224, "vit-b16": 224}


#: torch hub file stems of the torchvision checkpoints each pretrained backbone looks for (never downloaded)
HUB_NAMES = {"vgg16": "vgg16", "resnet18": "resnet18", "resnet50": "resnet50", "vit-b16": "vit_b_16"}


def load_pretrained(backbone: Backbone, name: str, weights: str | Path | None, log=print) -> None:
    """Load ``weights`` (or the torchvision checkpoint in the local torch hub cache) into a pretrained-layout backbone."""
    if not hasattr(backbone, "load_torchvision"):
        if weights:
            raise UsageError(f"--weights applies to {', '.join(HUB_NAMES)} only")
        return
    path = weights or (hub_weights(HUB_NAMES[name]) if name in HUB_NAMES else None)
    if path:
        ignored = backbone.load_torchvision(path)
        log(f"loaded {name} ImageNet weights from {path} (ignored: {', '.join(ignored) or 'none'})")
    elif name in HUB_NAMES:
        log(f"notice: no {name} weights given (--weights FILE) and none in the torch hub cache; starting from random init")


def default_input_size(name: str, backbone: Backbone) -> int | None:
    """The side images are resized to unless ``--input-size`` says otherwise (a ViT's own; None: the catalog's)."""
    return getattr(backbone, "image_size", None) or DEFAULT_INPUT_SIZE.get(name)


def build_backbone(name: str, **config) -> Backbone:
    """Backbone by name (see ``BACKBONES``): ``small`` (default), ``vgg16``, ResNets, ViTs or ``features`` (needs out_dim)."""
    if name in RESNETS:
        return build_resnet(name, **config)
    if name in VITS:
        return build_vit(name, **config)
    if name == "small":
        return SmallCNN(**{k: (tuple(v) if k == "channels" else v) for k, v in config.items()})
    if name == "vgg16":
        return VGG16(**config)
    if name == "features":
        return FeatureBackbone(**config)
    raise UsageError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


def preprocess(images: np.ndarray | torch.Tensor, backbone: Backbone, size: int | None = None) -> torch.Tensor:
    """uint8 (B, H, W, 3) images -> normalized float (B, 3, H, W), resized to ``size`` when given."""
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if size is not None and x.shape[-1] != size:
        x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(backbone.mean, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std
