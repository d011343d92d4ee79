"""How many IVF lists to probe, chosen by measurement on the catalog itself (issue 27).

How many lists a query must probe to find its exact neighbours depends on the data's shape,
not only on its size: on a 1 M-item isotropic 100-d mixture the default 8 nearest lists (plus
those within 2× the nearest's distance) reach recall@10 0.993, on a mixture of elongated
8-d components the same probing reaches 0.978 (BENCHMARKS.md, issue 27). So at build time
the IVF index measures its own recall on *validation queries* — catalog items it draws with
its own seed, each under one of a few users' weights — against an exact scan, and keeps the
smallest probe count of a ladder that reaches the target. Nothing here knows the model; the
weights are the caller's (the run's users) or a stated default spread.
"""
from __future__ import annotations

import numpy as np

from lrprec.recommend.search import VectorIndex, augment, query_constants, query_vectors

#: Recall@10 the validation queries must reach (above the 0.99 target: a sample of a few hundred
#: queries estimates recall to about ±0.002, so the margin keeps the catalog's own recall ≥ 0.99).
DEFAULT_TUNE_TARGET = 0.995
#: Probe counts tried, smallest first (each with the index's ratio rule on top).
NPROBE_LADDER = (8, 12, 16, 24, 32, 48, 64, 96, 128)
#: Validation queries (catalog items) and their neighbours per query.
TUNE_QUERIES = 400
_TUNE_K = 10
#: The default validation users when the caller has none: the global θ = 1 and three users with
#: θ_k = exp(N(0, 0.5²)) — a spread like the trained models' per-user θ (BENCHMARKS.md, issue 18).
_DEFAULT_USERS = 4
_THETA_SPREAD = 0.5


def default_weights(dim: int, seed: int = 0) -> np.ndarray:
    """(4, dim) float32 θ²: the global user (θ = 1) and three log-normal users, seeded."""
    rng = np.random.default_rng(seed + 104_729)
    theta = np.ones((_DEFAULT_USERS, dim), np.float32)
    theta[1:] = np.exp(rng.normal(0.0, _THETA_SPREAD, (_DEFAULT_USERS - 1, dim)))
    return theta * theta


def exact_neighbours(p: np.ndarray, pq: np.ndarray, ww: np.ndarray, k: int, exclude: np.ndarray, step: int = 1 << 15) -> np.ndarray:
    """Ids (B, k) of the exact k nearest items per query under its weights, skipping ``exclude``; chunked over p.

    A plain scan with no state (no vᵀ copy of the catalog): used once per build for validation.
    """
    q = query_vectors(pq, ww)
    const = query_constants(pq, ww)[:, None]
    b, n = pq.shape[0], p.shape[0]
    best_d = np.full((b, 0), np.inf)
    best_i = np.zeros((b, 0), np.int64)
    for s in range(0, n, step):
        v = augment(p[s:s + step])
        d = const - (q @ v.T).astype(np.float64)
        d[np.arange(s, s + v.shape[0])[None, :] == exclude[:, None]] = np.inf
        ids = np.broadcast_to(np.arange(s, s + v.shape[0]), d.shape)
        all_d, all_i = np.concatenate([best_d, d], 1), np.concatenate([best_i, ids], 1)
        top = np.argpartition(all_d, min(k, all_d.shape[1] - 1), axis=1)[:, :k] if all_d.shape[1] > k else np.argsort(all_d, 1)
        best_d, best_i = np.take_along_axis(all_d, top, 1), np.take_along_axis(all_i, top, 1)
    return best_i


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each truth row found in the same row of ``found``."""
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k].tolist()) & set(t.tolist())) / k for f, t in zip(found, truth)]))


def tune_nprobe(index: VectorIndex, target: float = DEFAULT_TUNE_TARGET, weights: np.ndarray | None = None, *,
                seed: int = 0, queries: int = TUNE_QUERIES, ladder: tuple[int, ...] = NPROBE_LADDER) -> tuple[int, list[tuple[int, float]]]:
    """The smallest ``nprobe`` of the ladder whose validation recall@10 reaches ``target`` (the largest if none does).

    Returns (nprobe, [(nprobe, recall), ...] as measured). ``index`` must have a settable
    ``nprobe`` (the IVF backend). Queries: ``queries`` catalog items drawn with ``seed``, the
    i-th under ``weights[i mod U]`` (default :func:`default_weights`). The index's ``nprobe``
    is left at the chosen value.
    """
    n = index.n
    if n <= _TUNE_K + 1:
        return int(index.nprobe), []
    w = default_weights(index.dim, seed) if weights is None else np.atleast_2d(np.asarray(weights, np.float32))
    rng = np.random.default_rng(seed + 15_485_863)
    qi = np.sort(rng.choice(n, size=min(queries, n), replace=False))
    pq = np.asarray(index.p[qi], np.float32)
    wq = np.ascontiguousarray(w[np.arange(qi.size) % w.shape[0]])
    truth = exact_neighbours(index.p, pq, wq, _TUNE_K, qi)
    tried: list[tuple[int, float]] = []
    max_lists = int(getattr(index, "nlist", max(ladder)))
    for nprobe in ladder:
        index.nprobe = int(min(nprobe, max_lists))
        got = index.search(pq, wq, _TUNE_K, exclude=qi).ids
        tried.append((index.nprobe, recall(got, truth)))
        if tried[-1][1] >= target or index.nprobe >= max_lists:
            break
    return int(index.nprobe), tried
