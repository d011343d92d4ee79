"""Imputers fill only the chosen regions; ROAD's linear imputation reproduces a linear ramp."""
from __future__ import annotations

import pytest
import torch

from lrprec.evaluate.imputers import IMPUTERS, linear_imputation, make_imputer


def _mask() -> torch.Tensor:
    m = torch.zeros(2, 1, 12, 12, dtype=torch.bool)
    m[0, :, 4:8, 4:8] = True
    m[1, :, 0:4, 8:12] = True  # touches the border
    m[1, :, 6:8, 2:10] = True
    return m


@pytest.mark.parametrize("name", IMPUTERS)
def test_imputers_fill_only_the_chosen_regions(name):
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    m = _mask()
    imp = make_imputer(name, x, bounds=(-1.0, 1.0), seed=3)
    out = imp(x, m, torch.arange(2))
    keep = ~m.expand_as(x)
    assert torch.equal(out[keep], x[keep])
    assert (out[~keep] != x[~keep]).all()
    assert torch.equal(out, imp(x, m, torch.arange(2)))  # the same noise every call (seeded, drawn once)


def test_linear_imputation_of_an_interior_hole_in_a_ramp_is_the_ramp():
    # The 8-neighbour weights are symmetric, so a linear function satisfies every equation.
    i, j = torch.meshgrid(torch.arange(12.0, dtype=torch.float64), torch.arange(12.0, dtype=torch.float64), indexing="ij")
    x = (0.3 * i - 0.7 * j + 2.0).expand(1, 2, 12, 12).clone()
    m = torch.zeros(1, 1, 12, 12, dtype=torch.bool)
    m[..., 3:9, 2:7] = True
    hole = x.clone()
    hole[m.expand_as(x)] = 100.0  # what was there must not matter
    torch.testing.assert_close(linear_imputation(hole, m), x, atol=1e-9, rtol=0)


def test_linear_imputation_of_a_fully_removed_image_is_zero():
    x = torch.randn(1, 3, 5, 5)
    assert torch.equal(linear_imputation(x, torch.ones(1, 1, 5, 5, dtype=torch.bool)), torch.zeros(1, 3, 5, 5, dtype=torch.float64))


def test_unknown_imputer_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown imputer 'blur'"):
        make_imputer("blur", torch.zeros(1, 3, 4, 4))
