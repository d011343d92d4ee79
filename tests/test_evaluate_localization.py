"""Relevance mass and pointing game against ground-truth masks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrprec.evaluate.localization import localization_scores, mask_area_fraction, pointing_game, relevance_mass, resize_masks


def test_relevance_mass_by_hand():
    rel = torch.tensor([[3.0, -5.0], [1.0, 0.0]])  # positive total 4, 3 of it in the mask
    mask = torch.tensor([[1, 1], [0, 0]], dtype=torch.uint8)
    np.testing.assert_allclose(relevance_mass(rel, mask), [0.75])  # negative relevance is ignored
    np.testing.assert_allclose(pointing_game(rel, mask), [1.0])
    np.testing.assert_allclose(pointing_game(-rel, mask), [1.0])  # peak of -rel is the -5 -> 5 pixel, in the mask
    np.testing.assert_allclose(pointing_game(rel, 1 - mask), [0.0])


def test_batched_channels_and_uniform_map_scores_the_area_fraction():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(5, 12, 12, generator=g) > 0.7
    uniform = torch.ones(5, 3, 12, 12)  # channels are summed first
    area = mask_area_fraction(masks)
    np.testing.assert_allclose(relevance_mass(uniform, masks), area)
    np.testing.assert_allclose(pointing_game(uniform, masks), area)  # ties: the expected hit, i.e. chance
    perfect = masks.float().unsqueeze(1).expand(5, 3, 12, 12) * torch.rand(5, 3, 12, 12, generator=g)
    np.testing.assert_allclose(relevance_mass(perfect, masks), np.ones(5))
    np.testing.assert_allclose(pointing_game(perfect, masks), np.ones(5))
    s = localization_scores(perfect, masks)
    assert s["relevance_mass"] == pytest.approx(1.0) and s["pointing_game"] == 1.0
    assert s["mask_area_fraction"] == pytest.approx(float(area.mean()))


def test_undefined_cases_are_nan_not_failures():
    rel = torch.stack([-torch.ones(4, 4), torch.ones(4, 4)])
    masks = torch.stack([torch.ones(4, 4), torch.zeros(4, 4)])
    mass = relevance_mass(rel, masks)
    assert math.isnan(mass[0]) and mass[1] == 0.0  # no positive relevance / all of it outside an empty mask
    pg = pointing_game(rel, masks)
    assert pg[0] == 1.0 and math.isnan(pg[1])
    assert localization_scores(rel, masks)["pointing_game"] == 1.0  # NaNs are skipped in the mean


def test_masks_at_another_resolution_are_resized_nearest():
    small = np.zeros((1, 4, 4), np.uint8)
    small[0, :2, :2] = 1
    big = resize_masks(small, 8, 8)
    assert big.shape == (1, 8, 8) and big[0, :4, :4].all() and not big[0, 4:, :].any() and not big[0, :, 4:].any()
    rel = torch.zeros(1, 8, 8)
    rel[0, 1, 1] = 2.0
    rel[0, 6, 6] = 1.0
    np.testing.assert_allclose(relevance_mass(rel, small), [2 / 3])
    with pytest.raises(ValueError, match="2 masks for 1"):
        relevance_mass(rel, np.zeros((2, 8, 8)))
