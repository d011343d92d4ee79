"""The probe's two readings (issue 26): what the pair head's distance reads of an item, and how much of the
features' variance a tag explains (against a direct computation of the model's logit and a hand-built case)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lrprec.data.catalog import RELATIONS
from lrprec.errors import UsageError
from lrprec.evaluate.probe import decision_features, variance_share
from lrprec.model.backbones import FeatureBackbone
from lrprec.model.pair import PairModel


def test_decision_features_give_the_model_logit():
    m = PairModel(FeatureBackbone(6), dim=3, n_relations=len(RELATIONS), n_users=2, seed=0, head="auto").double()
    with torch.no_grad():
        m.theta_global.mul_(torch.linspace(-2, 2, m.theta_global.numel()).view_as(m.theta_global))  # signs must not matter
    xa, xb = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    da, db = decision_features(m, xa), decision_features(m, xb)
    R, K = len(RELATIONS), 3
    assert da.shape == (5, 2 * R * K)
    for r in range(R):
        rel = torch.full((5,), r)
        logit = m(xa, xb, rel, torch.full((5,), -1))  # global θ (no user)
        a_side = da[:, r * K:(r + 1) * K]  # item a as the anchor, item b as the partner
        b_side = db[:, R * K + r * K:R * K + (r + 1) * K]
        assert torch.allclose(logit, m.c[r] - (a_side - b_side).pow(2).sum(1), atol=1e-10)


def test_variance_share_of_a_planted_offset():
    rng = np.random.default_rng(0)
    t = np.repeat([0, 1], 500)
    x = rng.normal(size=(1000, 4))
    x[:, 0] += 2.0 * t  # between-group variance 0.25·4 = 1 on one of four unit-variance columns: 1 / (4 + 1)
    assert variance_share(x, t) == pytest.approx(0.2, abs=0.02)
    assert variance_share(x, rng.permutation(t)) < 0.01
    with pytest.raises(UsageError, match="both labels"):
        variance_share(x, np.ones(1000))
    with pytest.raises(UsageError, match="labels"):
        variance_share(x, t[:10])
