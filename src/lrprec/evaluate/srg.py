"""Symmetric relevance gain (Blücher et al., TMLR 2024): both ends of one ordering.

MoRF alone rewards a map that destroys the image fastest, whatever the replacement does to
the model. SRG removes regions along *one* ordering of the explanation from both ends — most
influential first (MIF, the MoRF order) and least influential first (LIF, the same order
reversed) — over the whole range from nothing to everything removed, and scores

    SRG = AUC(LIF) − AUC(MIF),

the areas under the model-output curves against the removed fraction (trapezoid rule on
[0, 1]). A faithful map keeps the output high while its least relevant regions go (large
LIF area) and drops it fast while its most relevant ones go (small MIF area); a random map
scores about 0 and an inverted map the negative of the true one. Blücher et al. found its
method ranking stable across 40 occlusion strategies, unlike MoRF or LRF alone.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from lrprec.errors import UsageError
from lrprec.evaluate.perturbation import ScoreFn, n_regions, perturbation_curves, region_order, region_relevance


def fraction_schedule(total_regions: int, steps: int) -> list[int]:
    """Region counts removed at the fractions 0, 1/steps, ..., 1 (rounded, from 0 to all regions)."""
    if steps <= 0:
        raise UsageError(f"SRG needs at least one step, got {steps}")
    if total_regions <= 0:
        raise UsageError("no regions to remove")
    steps = min(steps, total_regions)
    return [int(round(j * total_regions / steps)) for j in range(steps + 1)]


def curve_auc(curves: torch.Tensor | np.ndarray, counts: Sequence[int], total_regions: int) -> np.ndarray:
    """Area under each curve (N, L+1, ...) against the removed fraction ``counts / total`` (trapezoids)."""
    c = curves.detach().cpu().double().numpy() if isinstance(curves, torch.Tensor) else np.asarray(curves, dtype=np.float64)
    frac = np.asarray(counts, dtype=np.float64) / float(total_regions)
    if c.shape[1] != frac.size:
        raise UsageError(f"{c.shape[1]} curve points for {frac.size} fractions")
    widths = np.diff(frac).reshape((1, -1) + (1,) * (c.ndim - 2))
    return (0.5 * (c[:, 1:] + c[:, :-1]) * widths).sum(axis=1)


def srg_curves(
    score_fn: ScoreFn,
    x: torch.Tensor,
    relevance: torch.Tensor,
    region: int,
    steps: int,
    imputer: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """MIF and LIF curves (N, L+1, ...) of one ordering, and the region counts of their columns.

    MIF visits regions in the map's MoRF order; LIF in exactly that order reversed (ties
    keep one order, so the two curves always describe the same ranking).
    """
    h, w = x.shape[-2:]
    total = n_regions(h, w, region)
    counts = fraction_schedule(total, steps)
    mif_order = region_order(region_relevance(relevance.detach().to(x.device), region), "morf")
    lif_order = mif_order.flip(1)
    mif = perturbation_curves(score_fn, x, relevance, 0, region, imputer=imputer, visit=mif_order, schedule=counts, batch_size=batch_size)
    lif = perturbation_curves(score_fn, x, relevance, 0, region, imputer=imputer, visit=lif_order, schedule=counts, batch_size=batch_size)
    return mif, lif, counts


def srg(mif: torch.Tensor | np.ndarray, lif: torch.Tensor | np.ndarray, counts: Sequence[int], total_regions: int) -> np.ndarray:
    """Per-curve SRG = AUC(LIF) − AUC(MIF) for curves (N, L+1, ...) -> (N, ...)."""
    return curve_auc(lif, counts, total_regions) - curve_auc(mif, counts, total_regions)
