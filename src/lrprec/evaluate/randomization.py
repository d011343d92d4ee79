"""Model-parameter randomization check (Adebayo et al. 2018; Quantus's MPRT family).

An explanation that does not change when the model's weights are destroyed explains the
input (its edges, its colours), not the model. The check randomizes the backbone's layers
cumulatively from the top (the layer nearest the output first, then the one below, ...),
re-explains the same pairs after each step, and measures how similar each map still is to
the map of the trained model: Spearman rank correlation and SSIM of the absolute pixel maps
(channels summed), as Adebayo et al. plot them. A method passes when the mean Spearman
correlation with every backbone layer randomized is below ``threshold`` (0.5 by default):
its maps then depend on what the model learned.

Randomization works on a deep copy (the caller's model is never touched); each layer's
weights and biases are redrawn from a seeded Gaussian with the layer's own standard
deviation, so activations keep their scale and the result is repeatable.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from lrprec.errors import UsageError

DEFAULT_THRESHOLD = 0.5

Explain = Callable[[nn.Module], torch.Tensor]
"""``explain(model) -> maps (N, H, W) or (N, C, H, W)`` for the fixed pairs under evaluation."""


def backbone_layers(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """The backbone's convolution and linear layers, top (nearest the output) first."""
    layers = [(name, m) for name, m in backbone.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not layers:
        raise UsageError("the backbone has no convolution or linear layer to randomize")
    return layers[::-1]


def _randomize_(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for p in (module.weight, getattr(module, "bias", None)):
            if p is None:
                continue
            std = float(p.detach().float().std()) if p.numel() > 1 else 0.0
            std = std if std > 0 else 0.01
            p.copy_((torch.randn(p.shape, generator=g, dtype=torch.float32) * std).to(dtype=p.dtype, device=p.device))


def cascading_randomization(model: nn.Module, backbone_attr: str = "backbone", seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(layer name, model copy)`` with the top 1, 2, ... backbone layers randomized.

    One copy is made and randomized further at each step (the same object is yielded every
    time, so use it before advancing the iterator).
    """
    work = copy.deepcopy(model)
    work.eval()
    for k, (name, module) in enumerate(backbone_layers(getattr(work, backbone_attr))):
        _randomize_(module, seed * 1000 + k)
        yield name, work


# ---- similarity -----------------------------------------------------------------------------
def _pixel_maps(maps: torch.Tensor) -> np.ndarray:
    m = maps.detach().cpu().double()
    if m.dim() == 4:
        m = m.sum(1)
    if m.dim() != 3:
        raise UsageError(f"maps must be (N, H, W) or (N, C, H, W), got shape {tuple(maps.shape)}")
    return m.numpy()


def _rankdata(v: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their ranks), as ``scipy.stats.rankdata``."""
    sorter = np.argsort(v, kind="mergesort")
    inv = np.empty(sorter.size, dtype=np.intp)
    inv[sorter] = np.arange(sorter.size)
    s = v[sorter]
    obs = np.r_[True, s[1:] != s[:-1]]
    dense = obs.cumsum()[inv]
    count = np.r_[np.nonzero(obs)[0], obs.size]
    return 0.5 * (count[dense] + count[dense - 1] + 1)


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row Spearman rank correlation of (N, ...) arrays (1 for identical rows, 0 if one row is constant otherwise)."""
    a2, b2 = np.asarray(a, np.float64).reshape(len(a), -1), np.asarray(b, np.float64).reshape(len(b), -1)
    out = np.empty(len(a2))
    for i, (x, y) in enumerate(zip(a2, b2)):
        if np.array_equal(x, y):
            out[i] = 1.0
            continue
        rx, ry = _rankdata(x), _rankdata(y)
        rx, ry = rx - rx.mean(), ry - ry.mean()
        den = np.sqrt((rx * rx).sum() * (ry * ry).sum())
        out[i] = float((rx * ry).sum() / den) if den > 0 else 0.0
    return out


def ssim(a: np.ndarray, b: np.ndarray, win_size: int = 7, k1: float = 0.01, k2: float = 0.03) -> np.ndarray:
    """Per-pair SSIM of (N, H, W) maps, as ``skimage.metrics.structural_similarity`` computes it.

    Uniform ``win_size`` window, sample covariance, mean over the window positions inside the
    image; the data range is each pair's joint range (max − min over both maps), as Quantus's
    ``ssim`` passes it. Identical maps score 1.
    """
    x = torch.as_tensor(np.asarray(a, np.float64))[:, None]
    y = torch.as_tensor(np.asarray(b, np.float64))[:, None]
    if x.shape != y.shape or x.dim() != 4:
        raise UsageError(f"ssim needs two (N, H, W) stacks of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < win_size:
        raise UsageError(f"maps of {tuple(x.shape[-2:])} pixels are smaller than the {win_size}-pixel SSIM window")
    data_range = (torch.maximum(x.amax((1, 2, 3)), y.amax((1, 2, 3))) - torch.minimum(x.amin((1, 2, 3)), y.amin((1, 2, 3))))[:, None, None, None]

    def filt(v: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(v, win_size, stride=1)

    cov_norm = win_size ** 2 / (win_size ** 2 - 1)
    ux, uy = filt(x), filt(y)
    vx = cov_norm * (filt(x * x) - ux * ux)
    vy = cov_norm * (filt(y * y) - uy * uy)
    vxy = cov_norm * (filt(x * y) - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    out = s.mean((1, 2, 3)).numpy()
    same = torch.equal
    for i in range(len(out)):
        if not np.isfinite(out[i]):
            out[i] = 1.0 if same(x[i], y[i]) else 0.0
    return out


# ---- the check ------------------------------------------------------------------------------
def randomization_check(model: nn.Module, explain: Explain, seed: int = 0, threshold: float = DEFAULT_THRESHOLD,
                        backbone_attr: str = "backbone") -> dict[str, Any]:
    """Cascading randomization of one explanation method; returns the per-layer similarities and ``passed``.

    ``explain(model)`` explains the fixed pairs under evaluation with the given model. The
    result: ``layers`` (randomized so far, top first), ``spearman`` and ``ssim`` (mean over
    the pairs after each step), ``threshold`` and ``passed`` (final mean Spearman below the
    threshold).
    """
    original = np.abs(_pixel_maps(explain(model)))
    layers: list[str] = []
    rho: list[float] = []
    sim: list[float] = []
    for name, randomized in cascading_randomization(model, backbone_attr, seed):
        maps = np.abs(_pixel_maps(explain(randomized)))
        layers.append(name)
        rho.append(float(np.mean(spearman(original, maps))))
        sim.append(float(np.mean(ssim(original, maps))))
    return {"layers": layers, "spearman": rho, "ssim": sim, "threshold": threshold, "passed": bool(rho[-1] < threshold)}
