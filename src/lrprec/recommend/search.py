"""The exact backend of the item index and what every backend shares (SPEC §2, eq 5).

The personalized distance d_u(i, j) = Σ_k w_k (p_ik − p_jk)², w = θ_u², becomes an inner
product over augmented vectors v_j = [p_j, p_j ∘ p_j] with the query q = [2 w ∘ p_i, −w]
(:mod:`lrprec.recommend.index` has the overview). :class:`VectorIndex` holds the vectors and
the exact float64 re-rank every backend ends with; :class:`ExactIndex` scans all of v with
batched matrix products and a threshold-filtered top-k.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import faiss
import numpy as np

from lrprec.errors import LrprecError

#: Below this many multiply-adds a faiss call runs on one thread (see :func:`faiss_threads`).
_PARALLEL_MIN_WORK = 50_000_000


@contextmanager
def faiss_threads(work: float) -> Iterator[None]:
    """Run a faiss call on one OpenMP thread when it is small.

    Thread start-up and barriers cost more than they save on small jobs, and on a busy
    machine every barrier waits for a time slice: a 240-item k-means took 1.6 s with two
    threads and 1 ms with one. Big jobs keep all threads.
    """
    if work >= _PARALLEL_MIN_WORK:
        yield
        return
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(old)


class IndexDataError(LrprecError):
    """Inconsistent arrays given to an index (shapes, dtypes, sizes)."""


# ---- the inner-product form -------------------------------------------------------------------
def augment(p: np.ndarray) -> np.ndarray:
    """v = [p, p ∘ p], float32 (N, 2K): the database side of the inner-product form."""
    p = np.asarray(p, dtype=np.float32)
    return np.concatenate([p, p * p], axis=-1)


def query_vectors(p_query: np.ndarray, w: np.ndarray) -> np.ndarray:
    """q = [2 w ∘ p_i, −w], float32 (B, 2K): the user-dependent query side; ``w`` is θ² (B, K) or (K,)."""
    p_query = np.atleast_2d(np.asarray(p_query, dtype=np.float32))
    w = np.asarray(w, dtype=np.float32)
    q = np.empty((p_query.shape[0], 2 * p_query.shape[1]), np.float32)
    k = p_query.shape[1]
    np.multiply(p_query, 2.0 * w, out=q[:, :k])
    np.negative(w, out=q[:, k:])
    return q


def query_constants(p_query: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Σ_k w_k p_ik² per query (B,): d = const − ⟨q, v⟩."""
    p_query = np.atleast_2d(np.asarray(p_query, dtype=np.float64))
    return (np.asarray(w, dtype=np.float64) * p_query * p_query).sum(-1)


def weighted_distance(p_query: np.ndarray, p_items: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Direct form d = Σ_k w_k (p_ik − p_jk)² in float64; broadcasts (…, K) arrays."""
    diff = np.asarray(p_query, dtype=np.float64) - np.asarray(p_items, dtype=np.float64)
    return (np.asarray(w, dtype=np.float64) * diff * diff).sum(-1)



@dataclass
class SearchResult:
    """Neighbours per query, nearest first: ids (B, k) int64 padded with −1, distances (B, k) float64 padded with +inf."""

    ids: np.ndarray
    distances: np.ndarray


def _pad_result(b: int, k: int) -> SearchResult:
    return SearchResult(np.full((b, k), -1, np.int64), np.full((b, k), np.inf, np.float64))


def _check_queries(p_query: np.ndarray, w: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    pq = np.atleast_2d(np.asarray(p_query, dtype=np.float32))
    if pq.ndim != 2 or pq.shape[1] != dim:
        raise IndexDataError(f"query vectors must have shape (B, {dim}), got {np.shape(p_query)}")
    ww = np.asarray(w, dtype=np.float32)
    if ww.ndim == 1 and ww.shape[0] == dim:
        ww = np.tile(ww, (pq.shape[0], 1))
    if ww.shape != pq.shape:
        raise IndexDataError(f"weights must have shape ({dim},) or {pq.shape}, got {np.shape(w)}")
    return pq, np.ascontiguousarray(ww)


def _category_groups(codes: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, order, offsets): items sorted by category code; members of c are order[offsets[c]:offsets[c+1]]."""
    codes = np.zeros(n, np.int64) if codes is None else np.asarray(codes, dtype=np.int64)
    if codes.shape != (n,):
        raise IndexDataError(f"category codes must have shape ({n},), got {codes.shape}")
    if n and codes.min() < 0:
        raise IndexDataError("category codes must be non-negative")
    order = np.argsort(codes, kind="stable")
    n_cat = int(codes.max()) + 1 if n else 0
    offsets = np.searchsorted(codes[order], np.arange(n_cat + 1)).astype(np.int64)
    return codes, order, offsets


class VectorIndex:
    """Common interface: exact re-ranking and the per-query bookkeeping shared by the backends.

    ``p`` is the (N, K) float32 matrix of projected item vectors of one relation (may be a
    read-only memmap); ``categories`` optional (N,) integer codes for per-category search.
    """

    backend = "base"

    def __init__(self, p: np.ndarray, categories: np.ndarray | None = None):
        if p.ndim != 2 or p.dtype != np.float32:
            raise IndexDataError(f"item vectors must be a float32 (N, K) array, got {p.dtype} {p.shape}")
        self.p = p
        self.n, self.dim = int(p.shape[0]), int(p.shape[1])
        self.codes, self.cat_order, self.cat_offsets = _category_groups(categories, self.n)
        self.build_seconds = 0.0

    @property
    def n_categories(self) -> int:
        """Number of categories of the indexed items (the per-category search's groups)."""
        return int(self.cat_offsets.size - 1)

    def nbytes(self) -> int:
        """Bytes this index holds in memory beyond the vectors ``p`` it was given."""
        return 0

    # ---- search API ------------------------------------------------------------------------
    def search(self, p_query: np.ndarray, w: np.ndarray, k: int, exclude: np.ndarray | None = None) -> SearchResult:
        """The k items with the smallest Σ w (p_q − p_j)² per query, skipping ``exclude[b]`` (an item id or −1)."""
        pq, ww = _check_queries(p_query, w, self.dim)
        b = pq.shape[0]
        if k <= 0:
            raise IndexDataError(f"k must be positive, got {k}")
        excl = np.full(b, -1, np.int64) if exclude is None else np.asarray(exclude, dtype=np.int64).reshape(b)
        kk = min(self.n, k + 1 + max(8, k // 2))  # margin for the exact re-rank and the excluded item
        cand = self._candidates(pq, ww, kk, k)
        return self._rerank(pq, ww, cand, excl, k)

    def search_per_category(self, p_query: np.ndarray, w: np.ndarray, k: int, exclude: int = -1) -> SearchResult:
        """Eq 5: for one query, the k nearest items *within each category* (row c = category code c)."""
        pq, ww = _check_queries(p_query, w, self.dim)
        if pq.shape[0] != 1:
            raise IndexDataError("per-category search takes one query at a time")
        if k <= 0:
            raise IndexDataError(f"k must be positive, got {k}")
        kk = k + 1 + max(8, k // 2)
        cand = self._candidates_per_category(pq, ww, kk, k)
        n_cat = cand.shape[0]
        return self._rerank(np.repeat(pq, n_cat, 0), np.repeat(ww, n_cat, 0), cand, np.full(n_cat, exclude, np.int64), k)

    # ---- backend hooks --------------------------------------------------------------------
    def _candidates(self, pq: np.ndarray, ww: np.ndarray, kk: int, k: int) -> np.ndarray:
        """Ids (B, ≥ kk) that contain the k nearest items per query (−1 where none), for exact re-ranking."""
        raise NotImplementedError

    def _candidates_per_category(self, pq: np.ndarray, ww: np.ndarray, kk: int, k: int) -> np.ndarray:
        raise NotImplementedError

    def _gather(self, ids: np.ndarray) -> np.ndarray:
        """Rows of p for an id array, as float64 with a trailing K axis (sorted reads for large sets: kinder to a memmap)."""
        flat = ids.ravel()
        if flat.size <= 4096:
            out = np.asarray(self.p[flat], dtype=np.float64)
        else:
            order = np.argsort(flat, kind="stable")
            out = np.empty((flat.size, self.dim), np.float64)
            out[order] = self.p[flat[order]]
        return out.reshape(*ids.shape, self.dim)

    def _rerank(self, pq: np.ndarray, ww: np.ndarray, cand: np.ndarray, excl: np.ndarray, k: int) -> SearchResult:
        """Exact distances of the candidates (direct form, float64), drop −1 and the excluded id, keep the k best.

        Ties are broken by item id, so results do not depend on the backend's candidate order.
        """
        b = cand.shape[0]
        if cand.size == 0:
            return _pad_result(b, k)
        valid = (cand >= 0) & (cand != excl[:, None])
        safe = np.where(valid, cand, 0)
        diff = self._gather(safe) - pq[:, None, :].astype(np.float64)
        d = np.einsum("bcj,bcj,bj->bc", diff, diff, ww.astype(np.float64))
        d[~valid] = np.inf
        order = np.lexsort((safe, d), axis=-1)[:, :k]
        rows = np.arange(b)[:, None]
        dist = d[rows, order]
        ids = np.where(np.isfinite(dist), safe[rows, order], -1)
        if ids.shape[1] < k:  # fewer candidates than k (tiny catalog or category)
            out = _pad_result(b, k)
            out.ids[:, : ids.shape[1]], out.distances[:, : ids.shape[1]] = ids, dist
            return out
        return SearchResult(ids, dist)

    # ---- persistence ----------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """Arrays that, with p and the categories, rebuild this index (see :func:`load_index_state`)."""
        return {}


class ExactIndex(VectorIndex):
    """Exact search: one pass of batched matrix products over vᵀ (2K, N) for a block of queries.

    The augmented matrix is stored transposed so that a single query is a contiguous
    matrix-vector product (memory-bound, runs at memory bandwidth) and a block of queries a
    GEMM that reads every item vector once for the whole block. Top-k selection keeps, per
    query, the current k-th best score as a threshold; only scores above it (a vanishing
    fraction after the first chunk) reach the merge. ``chunk_elems`` bounds the score block
    (queries × items) so it stays in cache.
    """

    backend = "exact"

    def __init__(self, p: np.ndarray, categories: np.ndarray | None = None, *, chunk_elems: int = 1 << 22):
        super().__init__(p, categories)
        t0 = time.perf_counter()
        vt = np.empty((2 * self.dim, self.n), np.float32)
        step = 1 << 16
        for s in range(0, self.n, step):  # chunked: never materialize [p, p²] row-major
            blk = np.asarray(self.p[s:s + step], dtype=np.float32)
            vt[: self.dim, s:s + step] = blk.T
            vt[self.dim:, s:s + step] = (blk * blk).T
        self.vt = vt
        self.chunk_elems = int(chunk_elems)
        self.build_seconds = time.perf_counter() - t0

    def nbytes(self) -> int:
        return int(self.vt.nbytes)

    def scores(self, q: np.ndarray) -> np.ndarray:
        """⟨q, v_j⟩ for every item, (B, N) float32 — the full score matrix (tests, small catalogs)."""
        return np.atleast_2d(q).astype(np.float32) @ self.vt

    def _candidates(self, pq: np.ndarray, ww: np.ndarray, kk: int, k: int) -> np.ndarray:
        q = query_vectors(pq, ww)
        b = q.shape[0]
        kk = min(kk, self.n)
        chunk = int(min(self.n, max(4 * kk, 4096, self.chunk_elems // max(b, 1))))
        best_s = np.full((b, kk), -np.inf, np.float32)
        best_i = np.full((b, kk), -1, np.int64)
        thr = np.full(b, -np.inf, np.float32)
        buf = np.empty((b, chunk), np.float32)
        rows_k = np.repeat(np.arange(b), kk)
        for s in range(0, self.n, chunk):
            e = min(self.n, s + chunk)
            sc = np.matmul(q, self.vt[:, s:e], out=buf[:, : e - s])
            if s == 0:  # first chunk: plain top-kk selection sets the thresholds
                top = np.argpartition(-sc, kk - 1, axis=1)[:, :kk] if e - s > kk else np.broadcast_to(np.arange(e - s), (b, e - s))
                best_s[:, : top.shape[1]] = np.take_along_axis(sc, top, 1)
                best_i[:, : top.shape[1]] = top
                thr = best_s.min(1)
                continue
            r, c = np.nonzero(sc > thr[:, None])
            if r.size == 0:
                continue
            # merge survivors with the current best: sort by (row, −score), keep kk per row
            all_r = np.concatenate([rows_k, r])
            all_s = np.concatenate([best_s.ravel(), sc[r, c]])
            all_i = np.concatenate([best_i.ravel(), c.astype(np.int64) + s])
            order = np.lexsort((-all_s, all_r))
            starts = np.searchsorted(all_r[order], np.arange(b))
            take = order[(starts[:, None] + np.arange(kk)).ravel()]
            best_s = all_s[take].reshape(b, kk)
            best_i = all_i[take].reshape(b, kk)
            thr = best_s[:, -1].copy()
        return best_i

    def _candidates_per_category(self, pq: np.ndarray, ww: np.ndarray, kk: int, k: int) -> np.ndarray:
        sc = self.scores(query_vectors(pq, ww))[0]
        n_cat = self.n_categories
        out = np.full((n_cat, kk), -1, np.int64)
        for c in range(n_cat):
            members = self.cat_order[self.cat_offsets[c]:self.cat_offsets[c + 1]]
            if members.size <= kk:
                out[c, : members.size] = members
            else:
                top = np.argpartition(-sc[members], kk - 1)[:kk]
                out[c] = members[top]
        return out
