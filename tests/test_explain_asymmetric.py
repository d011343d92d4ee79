"""Explanations of an asymmetric head (image a through E_r, image b through F_r), against the matrix form."""
from __future__ import annotations

import numpy as np
import torch

from lrprec.data.catalog import RELATIONS
from lrprec.explain.targets import explain_pairs
from lrprec.run import build_model

F_DIM, K = 12, 5


def _model():
    m = build_model({"backbone": "features", "backbone_config": {"out_dim": F_DIM}, "dim": K, "seed": 3, "head": "auto"}, n_users=2)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        m.F.copy_(torch.randn(m.F.shape, generator=g))  # a partner projection unlike E
        m.theta_delta.copy_(0.3 * torch.randn(m.theta_delta.shape, generator=g))
    return m.double().eval()


def test_distance_and_similarity_follow_the_matrix_form():
    """With LRP-0 on the head's linear map, written out by hand in float64:
    distance: R_a = Σ_k θ_k² δ_k a_k, R_b = −Σ_k θ_k² δ_k b_k (they add up to d);
    similarity: each side sums to S = 2 Σ_k θ_k² a_k b_k, with a = x_a E_r and b = x_b F_r."""
    m = _model()
    g = torch.Generator().manual_seed(1)
    x_a, x_b = torch.randn(6, F_DIM, generator=g, dtype=torch.float64), torch.randn(6, F_DIM, generator=g, dtype=torch.float64)
    r = RELATIONS.index("also_bought")
    user = torch.tensor([-1, 0, 1, -1, 0, 1])
    with torch.no_grad():
        E = m.E.view(F_DIM, len(RELATIONS), K)[:, r]
        Fr = m.F.view(F_DIM, len(RELATIONS), K)[:, r]
        a, b = x_a @ E, x_b @ Fr
        th2 = m.theta(torch.full((6,), r), user).pow(2)
        d = (th2 * (a - b) ** 2).sum(1)
    e = explain_pairs(m, x_a, x_b, r, user, target="distance", composite="lrp0")
    torch.testing.assert_close(e.relevance_a.sum(1), (th2 * (a - b) * a).sum(1))
    torch.testing.assert_close(e.relevance_b.sum(1), -(th2 * (a - b) * b).sum(1))
    torch.testing.assert_close(e.target_value, d)
    torch.testing.assert_close(e.logit, m.c[r].detach() - d)
    s = explain_pairs(m, x_a, x_b, r, user, target="similarity", composite="lrp0")
    S = 2 * (th2 * a * b).sum(1)
    torch.testing.assert_close(s.relevance_a.sum(1), S)
    torch.testing.assert_close(s.relevance_b.sum(1), S)
    # per feature on side a (LRP-0 through a linear map: x_f E_fk / a_k · R_k with R_k = 2θ² a_k b_k)
    want_a = x_a * (E @ (2 * th2 * b).T).T
    torch.testing.assert_close(s.relevance_a, want_a)


def test_the_asymmetric_head_is_not_symmetric_but_the_metric_one_is():
    m = _model()
    g = torch.Generator().manual_seed(2)
    x_a, x_b = torch.randn(4, F_DIM, generator=g, dtype=torch.float64), torch.randn(4, F_DIM, generator=g, dtype=torch.float64)
    for rel, symmetric in (("also_viewed", True), ("also_bought", False)):
        r = torch.full((4,), RELATIONS.index(rel))
        u = torch.full((4,), -1)
        with torch.no_grad():
            ab, ba = m(x_a, x_b, r, u), m(x_b, x_a, r, u)
        assert torch.allclose(ab, ba) == symmetric, rel
    assert m.asymmetric == [False, False, True, True]
    np.testing.assert_array_equal(m.partner_matrix().detach().numpy().reshape(F_DIM, 4, K)[:, 0], m.E.detach().numpy().reshape(F_DIM, 4, K)[:, 0])
