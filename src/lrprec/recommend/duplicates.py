"""Near-duplicates in recommendation lists (issue 31): the query's own other listings, and one listing per look.

Two items are *near-duplicates* under a relation when they share a category and their
indexed vectors are within ``threshold`` of the catalog's typical distance:
Σ_k w_k (v_i − v_j)² < threshold · scale, with w = θ_r² (the global metric) and ``scale`` the
median of that distance over a fixed sample of item pairs (:func:`distance_scale`), so the
threshold is unit-free and one value serves every relation and catalog. The default
(:data:`DEFAULT_THRESHOLD`) was chosen on validation catalogs with known variants
(docs/howto/small-catalogs.md).

Three list policies (:data:`POLICIES`):

``keep``      the model's order, untouched.
``demote``    (default) for a complement relation, the query's near-duplicates go below every
              other candidate, unless the data relate them to the query under that relation
              (a known positive pair): "what goes with this mug?" is never led by the same
              mug in another listing. Substitute lists keep their near-duplicates (variants
              *are* substitutes). For every relation, candidates of a category the training
              pairs never relate to the query's go below the others where validation allows
              (:mod:`lrprec.recommend.category_prior`).
``collapse``  ``demote``, and for every relation one listing per look: a candidate that is a
              near-duplicate of the query or of an item already listed is skipped.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from lrprec.errors import UsageError

POLICIES = ("keep", "demote", "collapse")
DEFAULT_POLICY = "demote"
#: Near-duplicate threshold as a share of the median item-pair distance (chosen on validation catalogs).
DEFAULT_THRESHOLD = 0.005
_SCALE_PAIRS = 4096


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise UsageError(f"unknown near-duplicate policy {policy!r}; known: {', '.join(POLICIES)}")
    return policy


def distance_scale(vectors: np.ndarray, w: np.ndarray, seed: int = 0, n_pairs: int = _SCALE_PAIRS) -> float:
    """Median of Σ w (v_i − v_j)² over a fixed sample of pairs i ≠ j (the unit of the threshold)."""
    n = vectors.shape[0]
    if n < 2:
        return 1.0
    rng = np.random.default_rng(seed)
    a = rng.integers(n, size=n_pairs)
    b = (a + 1 + rng.integers(n - 1, size=n_pairs)) % n  # never a == b
    diff = np.asarray(vectors[a], np.float64) - np.asarray(vectors[b], np.float64)
    med = float(np.median((np.asarray(w, np.float64) * diff * diff).sum(-1)))
    return med if med > 0 else 1.0


def near_duplicates(vectors: np.ndarray, categories: np.ndarray, w: np.ndarray, i: int, cand: np.ndarray, limit: float) -> np.ndarray:
    """Mask over ``cand``: same category as item ``i`` and Σ w (v_i − v_j)² < ``limit``."""
    cand = np.asarray(cand, np.int64)
    diff = np.asarray(vectors[cand], np.float64) - np.asarray(vectors[i], np.float64)
    d = (np.asarray(w, np.float64) * diff * diff).sum(-1)
    return (categories[cand] == categories[i]) & (d < limit)


def arrange(i: int, cand: np.ndarray, k: int, policy: str, complement: bool, vectors: np.ndarray, categories: np.ndarray,
            w: np.ndarray, limit: float, related: Callable[[int, np.ndarray], np.ndarray] | None = None,
            unlikely: np.ndarray | None = None) -> np.ndarray:
    """Positions into ``cand`` (best first, at most k) of the list under ``policy``.

    ``cand``: candidate item rows in the model's order (more than k, so that demoted or
    skipped items leave room). ``related(i, cand) -> bool mask``: pairs the data relate
    under this relation (never demoted). ``unlikely``: mask over ``cand`` of the candidates
    whose category the category prior rules out for the query's (:mod:`lrprec.recommend.category_prior`);
    they go below the others, above the query's near-duplicates.
    """
    order = np.arange(len(cand))
    if policy == "keep" or len(cand) == 0:
        return order[:k]
    level = np.zeros(len(cand), np.int64)
    if unlikely is not None:
        level[np.asarray(unlikely, bool)] = 1
    if complement:
        dup = near_duplicates(vectors, categories, w, i, cand, limit)
        if related is not None and dup.any():
            dup &= ~related(i, cand)
        level[dup] = 2
    if related is not None and unlikely is not None:
        level[(level == 1) & related(i, cand)] = 0  # a pair the data list is never ruled out
    order = np.argsort(level, kind="stable")  # the model's order within each level
    if policy == "collapse":
        kept: list[int] = []
        for pos in order:
            j = int(cand[pos])
            looks = np.asarray([i] + [int(cand[p]) for p in kept], np.int64)
            if near_duplicates(vectors, categories, w, j, looks, limit).any():
                continue
            kept.append(int(pos))
            if len(kept) == k:
                break
        return np.asarray(kept, np.int64)
    return order[:k]
