"""Vector indexes for personalized nearest-item search (SPEC §2, eq 5), pure numpy + faiss.

The personalized distance d_u(i, j) = Σ_k w_k (p_ik − p_jk)², w = θ_u², is a
*user-dependent* metric, so a plain L2 index cannot serve it. Its inner-product form

    d_u(i, j) = Σ_k w_k p_ik²  −  ⟨q, v_j⟩,   v_j = [p_j, p_j ∘ p_j],   q = [2 w ∘ p_i, −w]

puts all the user dependence into the query: one maximum-inner-product index over the
augmented vectors v serves every user. Two backends:

* :class:`ExactIndex` scans all of v with batched matrix products (many queries share each
  pass over memory) and a threshold-filtered top-k, so selection costs little next to the
  matrix product.
* :class:`IVFIndex` partitions the *unweighted* p by seeded k-means (per category, so lists
  are category-pure and eq 5's per-category search probes only that category's lists),
  probes the lists whose centroids are nearest to the query under the user's weighted
  distance (the centroids are augmented the same way, so the coarse quantizer is an inner
  product too), and scores the members exactly. How many lists it probes adapts to the
  query (see :func:`probe_lists`): the nearest lists plus every list almost as near as the
  nearest one — a query inside a large cluster that k-means cut into many lists probes all
  of them, one in a small tight cluster only a few; an optional second round adds lists
  whose typical member could be nearer than the k-th neighbour found so far.

Both re-rank their candidates with the direct form Σ w (p_i − p_j)² in float64, so the
distances they return are exact (the inner-product form loses precision to cancellation
when d is small next to ‖p‖²). Nothing here knows the model; inputs are arrays.

Modules: :mod:`lrprec.recommend.search` (the shared base, the exact backend),
:mod:`lrprec.recommend.ivf` (lists, probing, k-means); this one picks and persists a backend.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lrprec.recommend.hnsw import HNSWIndex
from lrprec.recommend.ivf import (
    DEFAULT_MAX_NPROBE, DEFAULT_NPROBE, DEFAULT_PROBE_RATIO, DEFAULT_REACH, IVFIndex, default_nlist, kmeans, probe_lists,
)
from lrprec.recommend.search import (
    ExactIndex, IndexDataError, SearchResult, VectorIndex, augment, faiss_threads, query_constants, query_vectors,
    weighted_distance,
)

__all__ = [  # the index's public names, wherever they are defined
    "AUTO_IVF_MIN_ITEMS", "BACKENDS", "DEFAULT_MAX_NPROBE", "DEFAULT_NPROBE", "DEFAULT_PROBE_RATIO", "DEFAULT_REACH",
    "ExactIndex", "HNSWIndex", "IVFIndex", "IndexDataError", "SearchResult", "VectorIndex", "augment", "build_index", "choose_backend",
    "default_nlist", "faiss_threads", "kmeans", "load_index_state", "probe_lists", "query_constants", "query_vectors",
    "save_state", "weighted_distance",
]

#: Catalog size from which ``auto`` chooses the IVF backend: below it an exact scan of a
#: 100-dimensional catalog takes ≲ 10 ms per query on one core, so exactness is free.
AUTO_IVF_MIN_ITEMS = 200_000


BACKENDS = ("auto", "exact", "ivf", "hnsw")


def choose_backend(backend: str, n: int) -> str:
    """Resolve ``auto``: exact below :data:`AUTO_IVF_MIN_ITEMS` items, IVF from there on."""
    if backend not in BACKENDS:
        raise IndexDataError(f"unknown index backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "ivf" if n >= AUTO_IVF_MIN_ITEMS else "exact"
    return backend


def build_index(p: np.ndarray, categories: np.ndarray | None = None, backend: str = "auto", *,
                seed: int = 0, nlist: int | None = None, nprobe: int | None = None,
                tune_weights: np.ndarray | None = None) -> VectorIndex:
    """An index over item vectors ``p`` (N, K) with the named backend (``auto`` by size).

    IVF without ``nprobe`` measures its probe count on validation queries under ``tune_weights``
    (θ² per user, e.g. the run's users; :mod:`lrprec.recommend.tune`).
    """
    kind = choose_backend(backend, int(p.shape[0]))
    if kind == "exact":
        return ExactIndex(p, categories)
    if kind == "hnsw":
        return HNSWIndex(p, categories, seed=seed)
    return IVFIndex(p, categories, nlist=nlist, nprobe=nprobe, seed=seed, tune_weights=tune_weights)


def load_index_state(backend: str, p: np.ndarray, categories: np.ndarray | None, state: dict[str, np.ndarray],
                     nprobe: int | None = None) -> VectorIndex:
    """Rebuild an index from p and the arrays :meth:`VectorIndex.state` returned (no k-means rerun).

    IVF: ``nprobe`` overrides the stored (measured) probe count.
    """
    if backend == "exact":
        return ExactIndex(p, categories)
    if backend == "ivf":
        return IVFIndex(p, categories, nprobe=nprobe, state=state)
    if backend == "hnsw":
        return HNSWIndex(p, categories, state=state)
    raise IndexDataError(f"unknown stored index backend {backend!r}")


def save_state(path: Path, index: VectorIndex) -> None:
    """Write an index's rebuild state as ``.npz`` (nothing for the exact backend)."""
    state = index.state()
    if state:
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **state)
        tmp.replace(path)
