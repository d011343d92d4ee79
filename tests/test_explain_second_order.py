"""Second-order exactness: the parameter gradient of a relevance-derived loss against float64 finite differences.

``explain_pairs(..., create_graph=True)`` is what explanation-guided training differentiates.
For every composite and every parameter group (a plain convolution, a BatchNorm-folded
convolution with non-trivial running statistics, the backbone's dense layer, the projection
E, the personal weights θ), the autograd directional derivative of a loss built from the
relevance maps must equal the central finite difference of the same loss.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lrprec.explain.composites import COMPOSITES
from lrprec.explain.targets import explain_pairs
from lrprec.model.backbones import Backbone
from lrprec.model.pair import PairModel
from lrprec.train.guidance import guidance_loss
from finite_differences import relative_errors


class _Tiny(Backbone):
    """conv → ReLU → conv → BN → ReLU → max pool → dense → ReLU, at 8×8 px."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(5), nn.ReLU(), nn.MaxPool2d(2))
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(nn.Linear(20, 6), nn.ReLU())
        self.out_dim = 6


def _model() -> PairModel:
    torch.manual_seed(0)
    bb = _Tiny()
    bn = bb.features[3]
    with torch.no_grad():  # running statistics far from the identity, so the fold matters
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.3, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.3, 0.3)
    model = PairModel(bb, dim=3, n_relations=2, n_users=2).double()
    with torch.no_grad():
        model.theta_delta.normal_(0, 0.1)
    return model.eval()


def _groups(model: PairModel) -> dict[str, list[nn.Parameter]]:
    f = model.backbone.features
    return {
        "conv": [f[0].weight, f[0].bias],
        "bn-folded conv": [f[2].weight, f[3].weight, f[3].bias],
        "dense": list(model.backbone.classifier[0].parameters()),
        "E": [model.E],
        "theta": [model.theta_global, model.theta_delta],
    }


CASES = [(c, "logit") for c in sorted(COMPOSITES)] + [("epsilon-gamma-box", "similarity"), ("gamma", "similarity")]


@pytest.mark.parametrize("composite,target", CASES)
def test_relevance_gradient_matches_finite_differences(composite: str, target: str) -> None:
    model = _model()
    g = torch.Generator().manual_seed(1)
    x_a = (torch.rand(3, 3, 8, 8, generator=g, dtype=torch.float64) - 0.5) / 0.25  # inside the zB pixel box
    x_b = (torch.rand(3, 3, 8, 8, generator=g, dtype=torch.float64) - 0.5) / 0.25
    rel, user = torch.tensor([0, 1, 1]), torch.tensor([0, -1, 1])
    penalty = torch.rand(8, 8, generator=g, dtype=torch.float64)
    weights = torch.randn(6, 3, 8, 8, generator=g, dtype=torch.float64)

    def loss() -> torch.Tensor:
        e = explain_pairs(model, x_a, x_b, rel, user, target=target, composite=composite, create_graph=True)
        r = torch.cat([e.relevance_a, e.relevance_b])
        return guidance_loss(r, penalty) + (weights * r).sum()  # a nonlinear and a linear functional of R

    errors = relative_errors(loss, _groups(model), g)
    assert max(errors.values()) <= 1e-4, errors
