"""Symmetric relevance gain on hand-built cases whose value is worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lrprec.evaluate.imputers import FillImputer
from lrprec.evaluate.agreement import kendall_tau, ranking_agreement
from lrprec.evaluate.srg import curve_auc, fraction_schedule, srg, srg_curves

W = torch.tensor([[4.0, 3.0], [2.0, 1.0]])  # a linear "model" on a 2x2 one-channel image: f(x) = sum(W * x)


def score(xb: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return (xb[:, 0] * W).sum((1, 2))


def test_srg_of_a_perfect_and_an_inverted_ordering():
    x = torch.ones(1, 1, 2, 2)
    zero = FillImputer("zero", torch.zeros_like(x))
    mif, lif, counts = srg_curves(score, x, W[None], region=1, steps=4, imputer=zero)
    assert counts == [0, 1, 2, 3, 4]
    # removing the most relevant pixel first: 10, 6, 3, 1, 0; least relevant first: 10, 9, 7, 4, 0
    np.testing.assert_allclose(mif[0].numpy(), [10, 6, 3, 1, 0])
    np.testing.assert_allclose(lif[0].numpy(), [10, 9, 7, 4, 0])
    # trapezoids on fractions 0, 1/4, ..., 1: AUC(MIF) = (5 + 6 + 3 + 1 + 0) / 4 = 3.75, AUC(LIF) = (5 + 9 + 7 + 4) / 4 = 6.25
    assert srg(mif, lif, counts, 4)[0] == pytest.approx(2.5)
    inv_mif, inv_lif, _ = srg_curves(score, x, -W[None], region=1, steps=4, imputer=zero)
    assert srg(inv_mif, inv_lif, counts, 4)[0] == pytest.approx(-2.5)


def test_fraction_schedule_and_auc():
    assert fraction_schedule(256, 4) == [0, 64, 128, 192, 256]
    assert fraction_schedule(3, 10) == [0, 1, 2, 3]  # never more steps than regions
    assert curve_auc(np.array([[1.0, 1.0, 1.0]]), [0, 1, 2], 2)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        fraction_schedule(10, 0)


def test_kendall_tau_matches_scipy():
    from scipy.stats import kendalltau

    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.integers(0, 4, 9).astype(float), rng.normal(size=9)  # ties in a
        assert kendall_tau(a, b) == pytest.approx(kendalltau(a, b).statistic, abs=1e-12)
    tau = ranking_agreement({"u": {"m1": 1.0, "m2": 2.0, "m3": 3.0}, "l": {"m1": 3.0, "m2": 2.0, "m3": 1.0}})
    assert tau == {"u~l": pytest.approx(-1.0)}
