"""Cascading randomization: flags an explainer that ignores the weights; similarity measures match scipy / Quantus."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lrprec.evaluate.randomization import backbone_layers, cascading_randomization, randomization_check, spearman, ssim


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveMaxPool2d(4), nn.Flatten(), nn.Linear(128, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).sum(1)


X = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def edges(model: nn.Module) -> torch.Tensor:
    """A Sobel edge detector: depends on the input only."""
    g = X.sum(1, keepdim=True)
    k = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])[None, None]
    gx, gy = torch.nn.functional.conv2d(g, k, padding=1), torch.nn.functional.conv2d(g, k.transpose(-1, -2), padding=1)
    return (gx ** 2 + gy ** 2).sqrt()[:, 0]


def saliency(model: nn.Module) -> torch.Tensor:
    x = X.clone().requires_grad_(True)
    model(x).sum().backward()
    return x.grad.abs().sum(1)


def test_the_check_flags_an_explainer_that_ignores_the_weights():
    net = Net()
    before = [p.detach().clone() for p in net.parameters()]
    flagged = randomization_check(net, edges, seed=0)
    assert flagged["passed"] is False and flagged["spearman"] == [1.0] * 3 and flagged["ssim"] == [1.0] * 3
    assert flagged["layers"] == ["6", "2", "0"]  # top first
    ok = randomization_check(net, saliency, seed=0)
    assert ok["passed"] is True and ok["spearman"][-1] < 0.5
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # the caller's model is untouched


def test_cascade_randomizes_from_the_top_and_is_seeded():
    net = Net()
    names = [n for n, _ in backbone_layers(net.backbone)]
    seen = []
    for (name, m1), (_, m2) in zip(cascading_randomization(net, seed=3), cascading_randomization(net, seed=3)):
        seen.append(name)
        assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))
        changed = [n for n, mod in backbone_layers(m1.backbone) if not torch.equal(mod.weight, dict(net.backbone.named_modules())[n].weight)]
        assert changed == seen
    assert seen == names


def test_spearman_and_ssim_match_scipy_and_quantus():
    from quantus.functions.similarity_func import ssim as q_ssim
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 16, 16))
    b = a + rng.normal(scale=0.7, size=a.shape)
    b[0, :4] = 0.0
    a[0, :4] = 0.0  # ties
    ours = spearman(a, b)
    for i in range(3):
        assert ours[i] == pytest.approx(spearmanr(a[i].ravel(), b[i].ravel()).statistic, abs=1e-12)
        assert ssim(a, b)[i] == pytest.approx(q_ssim(a[i], b[i]), abs=1e-9)
    assert spearman(a, a).tolist() == [1.0] * 3 and ssim(a, a).tolist() == pytest.approx([1.0] * 3)
