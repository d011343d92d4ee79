"""Agreement with Quantus on the same inputs, with deterministic fills (Quantus is a test dependency).

* RegionPerturbation (MoRF and LeRF): Quantus's per-step drops y(x) − y(x_k) equal ours
  (curve column 0 minus column k), with the same seeded noise image as the fill;
* ROAD's noisy linear imputation with noise 0 equals ours pixel for pixel.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import quantus  # a test dependency (pyproject: test extra)
from lrprec.evaluate.imputers import linear_imputation
from lrprec.evaluate.perturbation import perturbation_curves, uniform_fill


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(96, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.mark.parametrize("order", ["morf", "lrf"])
def test_region_perturbation_matches_quantus(order):
    model = Classifier().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 16, 16, generator=g)
    a = torch.randn(5, 1, 16, 16, generator=g)
    y = np.ones(5, dtype=int)
    fill = uniform_fill(x, (0.0, 1.0), seed=4)
    flat_fill = fill.numpy().reshape(5, -1)

    def same_fill(arr: np.ndarray, indices: np.ndarray, **kwargs) -> np.ndarray:
        out = arr.copy()
        rows = np.arange(arr.shape[0])[:, None]
        out[rows, indices] = flat_fill[rows, indices]
        return out

    metric = quantus.RegionPerturbation(patch_size=4, regions_evaluation=10, order="morf" if order == "morf" else "lerf",
                                        normalise=False, perturb_func=same_fill, disable_warnings=True, display_progressbar=False)
    theirs = np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=y, a_batch=a.expand(-1, 3, -1, -1).numpy().copy(),
                               device="cpu", softmax=False, batch_size=5, channel_first=True))
    curves = perturbation_curves(lambda xb, rows: model(xb)[:, 1], x, a, 10, 4, order, fill_values=fill)
    ours = (curves[:, :1] - curves[:, 1:]).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0)


def test_linear_imputation_matches_quantus_noisy_linear_imputation():
    from quantus.functions.perturb_func import noisy_linear_imputation

    g = torch.Generator().manual_seed(1)
    shares = torch.tensor([0.2, 0.6, 0.95, 0.0, 0.4, 0.8, 0.3, 0.5, 1.0, 0.7, 0.9])  # 11 images: blocks of 4 on 2 threads
    x = torch.randn(len(shares), 3, 16, 16, generator=g, dtype=torch.float64)
    m = (torch.rand(len(shares), 1, 4, 4, generator=g) < shares[:, None, None, None]) | (shares == 1.0)[:, None, None, None]
    m = m.repeat_interleave(4, 2).repeat_interleave(4, 3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ours = linear_imputation(x, m).numpy()
        torch.set_num_threads(1)
        assert np.array_equal(linear_imputation(x, m).numpy(), ours)  # threads change nothing
    finally:
        torch.set_num_threads(threads)
    assert m[3].sum() == 0 and np.array_equal(ours[3], x[3].numpy())  # nothing removed: unchanged
    assert m[8].all() and not ours[8].any()  # all removed: 0 (Quantus's system is singular there)
    for i in (0, 1, 2, 4, 5, 6, 7, 9, 10):
        idx = np.flatnonzero(m[i, 0].numpy().ravel())
        theirs = noisy_linear_imputation(x[i].numpy().copy(), idx, noise=0.0)
        np.testing.assert_allclose(ours[i], theirs, atol=1e-6, rtol=0)
