"""How stable is a method ranking? Kendall's τ-b between two scorings of the same methods.

MetaQuantus (Hedström et al. 2023) showed that faithfulness metrics can rank the same
explanation methods differently, so the leaderboard reports the rank agreement between
imputers next to the scores themselves.
"""
from __future__ import annotations

import itertools
import math
from typing import Mapping, Sequence

import numpy as np

from lrprec.errors import UsageError


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's τ-b of two score lists (tie-corrected; NaN when either list is constant)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise UsageError(f"kendall_tau needs two lists of the same length, got {x.shape} and {y.shape}")
    i, j = np.triu_indices(x.size, k=1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    concordant_minus_discordant = float((sx * sy).sum())
    nx, ny = float((sx != 0).sum()), float((sy != 0).sum())
    if nx == 0 or ny == 0:
        return math.nan
    return concordant_minus_discordant / math.sqrt(nx * ny)


def ranking_agreement(scores: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """τ between every two scorings: ``{"uniform~linear": τ, ...}`` for ``scores[scoring][method]``.

    Only methods scored (finite) under both scorings of a pair count.
    """
    out: dict[str, float] = {}
    for s1, s2 in itertools.combinations(list(scores), 2):
        common = [m for m in scores[s1] if m in scores[s2] and scores[s1][m] is not None and scores[s2][m] is not None
                  and math.isfinite(scores[s1][m]) and math.isfinite(scores[s2][m])]
        out[f"{s1}~{s2}"] = kendall_tau([scores[s1][m] for m in common], [scores[s2][m] for m in common]) if len(common) >= 2 else math.nan
    return out
