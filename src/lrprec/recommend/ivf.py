"""The IVF backend of the item index: seeded k-means lists probed under the user's weights (SPEC §2).

Lists partition the *unweighted* p per category; a query probes the lists whose centroids are
nearest under its weighted distance (:func:`probe_lists`: the nearest lists plus every list
almost as near, optionally a second round) and scores their members exactly
(:mod:`lrprec.recommend.index` has the overview).
"""
from __future__ import annotations

import math
import time

import faiss
import numpy as np

from lrprec.recommend.search import IndexDataError, VectorIndex, augment, faiss_threads, query_constants, query_vectors
from lrprec.recommend.tune import DEFAULT_TUNE_TARGET, tune_nprobe

#: The nearest lists, always probed; the rules of :func:`probe_lists` add more per query.
DEFAULT_NPROBE = 8
#: Also probed: lists within (1 + ratio) × the nearest list's weighted distance (0 turns it off).
DEFAULT_PROBE_RATIO = 1.0
#: Optional second round: lists whose typical member may be nearer than the k-th distance found
#: so far, radius × reach (0, the default, turns it off: it reached recall 0.998 on the
#: isotropic mixture but probed ~6× the lists of the ratio rule, see BENCHMARKS.md).
DEFAULT_REACH = 0.0
#: Cap on the lists probed per query (bounds the worst case on data without cluster structure).
DEFAULT_MAX_NPROBE = 128
#: A list is split in two when 2-means over its members removes at least this share of its
#: squared error (:func:`split_mixed_lists`; 0 turns it off). A list holding one Gaussian
#: component loses ~2/π of its largest direction's share (< 10% at K ≥ 32); one holding two
#: separated components loses most of it. Chosen on the 200k isotropic mixture (BENCHMARKS.md, issue 27).
DEFAULT_SPLIT_GAIN = 0.3
#: Rounds of :func:`split_mixed_lists` (a list mixing 2^r components needs r rounds).
_SPLIT_ROUNDS = 6
#: ... or when its mean squared radius exceeds this multiple of the median list's (the median over
#: lists, not items: where mixed lists hold most items, as in categories that cut across clusters,
#: an item-weighted median is one of them and nothing is split; BENCHMARKS.md, issue 27, session 10).
#: A list mixing many separated clusters gains little from any one cut, but is wide.
DEFAULT_SPLIT_WIDTH = 4.0
#: Which median the width rule compares with: "lists" (the median list) or "items" (the
#: item-weighted median, the session 9 rule).
WIDTH_MEDIANS = ("lists", "items")
DEFAULT_WIDTH_MEDIAN = "lists"
#: Lists smaller than this are never split.
_SPLIT_MIN_MEMBERS = 4
#: faiss warns when k-means gets fewer points per centroid than this; we never ask it to.
_MIN_POINTS_PER_LIST = 39
_KMEANS_ITER = 12
_KMEANS_MAX_POINTS_PER_CENTROID = 64


def probe_lists(dist: np.ndarray, nprobe: int, max_nprobe: int, spread: np.ndarray | None = None,
                d_ref: np.ndarray | None = None, reach: float = 1.0, ratio: float = 0.0) -> np.ndarray:
    """Lists to probe per query: (B, m) int64 list ids, nearest first, padded with −1.

    ``dist`` (B, L): weighted squared distances from each query to the list centroids.
    Always the ``nprobe`` nearest lists. With ``ratio`` > 0 also every list within
    (1 + ratio) × the nearest list's distance: k-means cuts a big cluster into many lists
    whose centroids are about equally far from a query inside it, while other clusters'
    lists are several times farther. With ``d_ref`` (B,) — the k-th smallest distance
    found so far — and ``spread`` (B, L) — each list's mean weighted squared distance of its
    members to the centroid — also every list with √dist ≤ √d_ref + reach·√spread, i.e.
    whose typical member could lie within the current k-th distance (the triangle
    inequality with the list's typical radius instead of its worst case), at most
    ``max_nprobe`` lists in all.
    """
    b, n_lists = dist.shape
    adaptive = d_ref is not None or ratio > 0
    m = int(min(max(nprobe, max_nprobe if adaptive else nprobe), n_lists))
    if m <= 0 or b == 0:
        return np.full((b, 0), -1, np.int64)
    if d_ref is None or spread is None:
        return _nearest_lists(dist, nprobe, m, ratio)
    top = np.argpartition(dist, m - 1, axis=1)[:, :m] if m < n_lists else np.broadcast_to(np.arange(n_lists), (b, n_lists))
    td = np.take_along_axis(dist, top, 1)
    o = np.argsort(td, axis=1, kind="stable")
    top, td = np.take_along_axis(top, o, 1), np.take_along_axis(td, o, 1)
    keep = (np.arange(m) < nprobe)[None, :] & np.isfinite(td)  # +inf marks lists not to probe (other categories)
    if ratio > 0:
        keep = keep | (td <= (1.0 + ratio) * td[:, :1]) & np.isfinite(td)
    # the second round (the first-round-only case returned above)
    radius = np.sqrt(np.maximum(np.take_along_axis(spread, top, 1), 0.0))
    keep = keep | (np.sqrt(td) <= np.sqrt(np.asarray(d_ref, np.float64))[:, None] + reach * radius) & np.isfinite(td)
    width = int(keep.sum(1).max())
    out = np.where(keep, top, -1)
    # keep the chosen lists first, nearest first, so the trimmed width holds them all
    order = np.argsort(~keep, axis=1, kind="stable")
    return np.take_along_axis(out, order, 1)[:, :width].astype(np.int64)


def _nearest_lists(dist: np.ndarray, nprobe: int, m: int, ratio: float) -> np.ndarray:
    """:func:`probe_lists` without a second round: the same lists, in the same order, faster.

    Only lists with a distance below a cheap upper bound are sorted: the ``nprobe``-th smallest
    distance of every s-th list (a subset's ``nprobe``-th smallest is ≥ the whole row's), or
    (1 + ratio) × the nearest if larger. The kept lists are a prefix of each row's sorted
    order, so their rank among the candidates is their rank among all lists. One query (the
    latency path) has its own short path: with 4096 lists (1M items) the selection takes a
    third of the time of a partial sort over all lists (22 vs 62 µs; the old cost was a
    quarter of an IVF query on a K = 32 catalog).
    """
    b, n_lists = dist.shape
    nearest = dist.min(1)
    near = (1.0 + ratio) * nearest if ratio > 0 else np.full(b, -np.inf)
    if nprobe <= 0:
        bound = near
    elif nprobe >= n_lists:
        bound = np.full(b, np.inf)
    else:
        step = max(1, n_lists // (32 * nprobe))
        sub = dist[:, ::step]
        bound = np.maximum(np.partition(sub, nprobe - 1, axis=1)[:, nprobe - 1], near)
    if b == 1:
        row = dist[0]
        idx = np.flatnonzero(row <= bound[0]) if np.isfinite(bound[0]) else np.flatnonzero(np.isfinite(row))
        dd = row[idx]
        o = np.argsort(dd, kind="stable")  # idx ascends, so ties stay in list-id order
        idx, dd = idx[o], dd[o]
        n_keep = min(m, max(min(nprobe, idx.size), int(np.searchsorted(dd, near[0], side="right"))))
        return idx[None, :n_keep].astype(np.int64)
    r, c = np.nonzero((dist <= bound[:, None]) & np.isfinite(dist))  # +inf: lists not to probe (other categories)
    d = dist[r, c]
    o = np.lexsort((c, d, r))  # per row, nearest first, ties by list id (a stable sort of the row)
    r, c, d = r[o], c[o], d[o]
    rank = np.arange(r.size) - np.searchsorted(r, np.arange(b))[r]
    keep = (rank < m) & ((rank < nprobe) | (d <= near[r]))
    counts = np.bincount(r[keep], minlength=b)
    out = np.full((b, int(counts.max()) if counts.size else 0), -1, np.int64)
    out[r[keep], rank[keep]] = c[keep]
    return out


def default_nlist(n: int) -> int:
    """Number of IVF lists: the power of two nearest 4·√N (4096 for 1M items), at least 1."""
    if n <= 0:
        return 1
    return int(max(1, 2 ** round(math.log2(max(1.0, 4.0 * math.sqrt(n))))))


class IVFIndex(VectorIndex):
    """Inverted-file index: category-pure k-means lists of the unweighted p, probed by weighted distance.

    Lists: within each category, seeded faiss k-means on p with ``nlist·|C|/N`` centroids
    (at least 1, at most |C|/39). The coarse quantizer holds the augmented centroids
    [c, c ∘ c], so ⟨q, [c, c²]⟩ ranks lists by the user's weighted distance Σ w (p_i − c)².
    A faiss ``IndexIVFFlat`` (inner product) over v scores the probed lists' members
    exactly; the top candidates are then re-ranked in float64 by the direct form.
    ``nprobe``, ``probe_ratio``, ``reach`` and ``max_nprobe`` choose the lists per query
    (:func:`probe_lists`; ``probe_ratio`` = ``reach`` = 0 is the classic fixed-nprobe IVF);
    they are search-time settings. Without an explicit ``nprobe`` a new index chooses it by
    measurement (:func:`lrprec.recommend.tune.tune_nprobe`: the smallest probe count whose
    recall@10 on validation queries drawn from the catalog reaches ``tune_target``, under
    ``tune_weights``) and stores it in its state. Per list it also keeps the
    mean squared residual of its members per dimension, so a user's weighted list radius
    (for ``reach``) is one matrix-vector product. ``last_probed`` holds the number of lists
    each query of the latest search probed (informational, for benchmarks).
    """

    backend = "ivf"

    def __init__(self, p: np.ndarray, categories: np.ndarray | None = None, *, nlist: int | None = None,
                 nprobe: int | None = None, seed: int = 0, state: dict[str, np.ndarray] | None = None,
                 reach: float = DEFAULT_REACH, max_nprobe: int = DEFAULT_MAX_NPROBE, probe_ratio: float = DEFAULT_PROBE_RATIO,
                 niter: int = _KMEANS_ITER, max_points_per_centroid: int = _KMEANS_MAX_POINTS_PER_CENTROID,
                 split_gain: float = DEFAULT_SPLIT_GAIN, split_width: float = DEFAULT_SPLIT_WIDTH,
                 tune_target: float = DEFAULT_TUNE_TARGET, tune_weights: np.ndarray | None = None):
        super().__init__(p, categories)
        t0 = time.perf_counter()
        self.nprobe = DEFAULT_NPROBE if nprobe is None else int(nprobe)
        self.tuned: list[tuple[int, float]] = []
        self.reach = float(reach)
        self.probe_ratio = float(probe_ratio)
        self.last_probed = np.zeros(0, np.int64)
        self.max_nprobe = int(max_nprobe)
        self.split_gain, self.split_width = float(split_gain), float(split_width)
        if state is None:
            self.centroids, self.assign, self.list_offsets = self._train(nlist or default_nlist(self.n), seed, niter, max_points_per_centroid)
        else:
            self.centroids = np.ascontiguousarray(state["centroids"], dtype=np.float32)
            self.assign = np.asarray(state["assign"], dtype=np.int64)
            self.list_offsets = np.asarray(state["list_offsets"], dtype=np.int64)
            if self.assign.shape != (self.n,) or self.centroids.shape[1] != self.dim or self.list_offsets.size != self.n_categories + 1:
                raise IndexDataError("stored IVF lists do not match the item vectors")
            if nprobe is None and "nprobe" in state:
                self.nprobe = int(np.asarray(state["nprobe"]).reshape(-1)[0])
        self.nlist = int(self.centroids.shape[0])
        self.aug_centroids = augment(self.centroids)
        self._build_faiss()
        self.residual_sq = self._residual_sq()
        if state is None and nprobe is None and tune_target > 0:
            self.nprobe, self.tuned = tune_nprobe(self, tune_target, tune_weights, seed=seed)
        self.build_seconds = time.perf_counter() - t0

    def _train(self, nlist: int, seed: int, niter: int, max_ppc: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Seeded k-means per category; returns centroids, item → list, and each category's list range."""
        cents: list[np.ndarray] = []
        assign = np.empty(self.n, np.int64)
        list_offsets = [0]
        for c in range(self.n_categories):
            members = np.sort(self.cat_order[self.cat_offsets[c]:self.cat_offsets[c + 1]])
            x = np.ascontiguousarray(self.p[members], dtype=np.float32)
            n_c = x.shape[0]
            k_c = int(min(max(1, round(nlist * n_c / max(self.n, 1))), max(1, n_c // _MIN_POINTS_PER_LIST)))
            cent, local = kmeans(x, k_c, seed=seed + 7919 * c, niter=niter, max_points_per_centroid=max_ppc)
            if self.split_gain > 0 or self.split_width > 0:
                cent, local = split_mixed_lists(x, cent, local, self.split_gain, self.split_width)  # ends with nearest_lists
            else:
                cent, local = nearest_lists(x, cent)
            assign[members] = local + list_offsets[-1]
            cents.append(cent)
            list_offsets.append(list_offsets[-1] + cent.shape[0])
        if not cents:
            cents.append(np.zeros((1, self.dim), np.float32))
        return np.concatenate(cents).astype(np.float32), assign, np.asarray(list_offsets, np.int64)

    def _build_faiss(self) -> None:
        quantizer = faiss.IndexFlatIP(2 * self.dim)
        quantizer.add(self.aug_centroids)
        index = faiss.IndexIVFFlat(quantizer, 2 * self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        index.is_trained = True
        step = 1 << 16
        for s in range(0, self.n, step):  # chunked so [p, p²] never exists whole
            v = augment(self.p[s:s + step])
            ids = np.arange(s, s + v.shape[0], dtype=np.int64)
            index.add_core(v.shape[0], faiss.swig_ptr(v), faiss.swig_ptr(ids), faiss.swig_ptr(np.ascontiguousarray(self.assign[s:s + step])))
        self._quantizer = quantizer  # keep alive alongside the index
        self.index = index

    def _residual_sq(self) -> np.ndarray:
        """Per list and dimension, the mean of (p_jk − c_k)² over its members, (nlist, K) float32."""
        acc = np.zeros((self.nlist, self.dim), np.float64)
        step = 1 << 16
        for s in range(0, self.n, step):
            a = self.assign[s:s + step]
            r = np.asarray(self.p[s:s + step], dtype=np.float64) - self.centroids[a]
            order = np.argsort(a, kind="stable")
            starts = np.flatnonzero(np.r_[True, np.diff(a[order]) != 0])
            acc[a[order][starts]] += np.add.reduceat((r * r)[order], starts, axis=0)
        counts = np.bincount(self.assign, minlength=self.nlist).astype(np.float64)
        return (acc / np.maximum(counts, 1)[:, None]).astype(np.float32)

    def nbytes(self) -> int:
        return int(self.n * 2 * self.dim * 4 + self.n * 8 + self.aug_centroids.nbytes + self.centroids.nbytes + self.assign.nbytes
                   + self.residual_sq.nbytes)

    def _centroid_distances(self, pq: np.ndarray, ww: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Weighted squared distances from each query to every list centroid, (B, nlist) float32, ≥ 0."""
        d = query_constants(pq, ww)[:, None].astype(np.float32) - q @ self.aug_centroids.T
        return np.maximum(d, 0.0, out=d)

    def _scan(self, q: np.ndarray, kk: int, lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, ⟨q, v⟩) of the kk best inner products among the members of ``lists`` (−1 entries skipped)."""
        b, m = lists.shape
        dist = np.empty((b, kk), np.float32)
        ids = np.empty((b, kk), np.int64)
        lists = np.ascontiguousarray(lists, dtype=np.int64)
        params = faiss.SearchParametersIVF()
        params.nprobe = max(m, 1)  # per call, not on the shared index: concurrent searches stay independent
        coarse = np.zeros((b, m), np.float32)
        work = float((lists >= 0).sum()) * (self.n / max(self.nlist, 1)) * 2 * self.dim
        with faiss_threads(work):
            self.index.search_preassigned_c(b, faiss.swig_ptr(q), kk, faiss.swig_ptr(lists), faiss.swig_ptr(coarse),
                                            faiss.swig_ptr(dist), faiss.swig_ptr(ids), False, params)
        return ids, dist

    def _two_rounds(self, pq: np.ndarray, ww: np.ndarray, q: np.ndarray, dist: np.ndarray, kk: int, k_ref: int) -> np.ndarray:
        """Scan the nearest lists, then the lists within reach of the k_ref-th distance found; candidate ids (B, kk or 2·kk).

        k_ref is k + 1: the query item itself (distance 0) may be among those found.
        """
        first = probe_lists(dist, self.nprobe, self.max_nprobe, ratio=self.probe_ratio)
        ids, ip = self._scan(q, kk, first)
        self.last_probed = (first >= 0).sum(1)
        if self.reach <= 0 or first.shape[1] >= dist.shape[1]:
            return ids
        # k_ref-th best distance so far (d = const − ⟨q, v⟩); +inf where fewer were found
        d_found = np.where(ids >= 0, query_constants(pq, ww)[:, None] - ip.astype(np.float64), np.inf)
        d_ref = np.sort(d_found, axis=1)[:, min(k_ref, kk) - 1]
        spread = ww.astype(np.float32) @ self.residual_sq.T
        more = probe_lists(dist, self.nprobe, self.max_nprobe, spread, d_ref, self.reach, self.probe_ratio)
        seen = (more[:, :, None] == first[:, None, :]).any(-1)
        more = np.where(seen, -1, more)  # lists of the first round are not scanned twice
        if more.shape[1] == 0 or (more < 0).all():
            return ids
        ids2, _ = self._scan(q, kk, more)
        self.last_probed = self.last_probed + (more >= 0).sum(1)
        return np.concatenate([ids, ids2], axis=1)

    def _candidates(self, pq: np.ndarray, ww: np.ndarray, kk: int, k: int) -> np.ndarray:
        q = query_vectors(pq, ww)
        return self._two_rounds(pq, ww, q, self._centroid_distances(pq, ww, q), kk, k + 1)

    def _candidates_per_category(self, pq: np.ndarray, ww: np.ndarray, kk: int, k: int) -> np.ndarray:
        q = query_vectors(pq, ww)
        dist = self._centroid_distances(pq, ww, q)[0]
        n_cat = self.n_categories
        out = np.full((n_cat, 2 * kk), -1, np.int64)
        for c in range(n_cat):
            lo, hi = int(self.list_offsets[c]), int(self.list_offsets[c + 1])
            # one category = one small IVF: its lists only (ids are global list numbers)
            sub = np.full((1, self.nlist), np.inf, np.float32)
            sub[0, lo:hi] = dist[lo:hi]
            got = self._two_rounds(pq, ww, q, sub, kk, k + 1)
            out[c, : got.shape[1]] = got[0]
        return out

    def state(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids, "assign": self.assign.astype(np.int32), "list_offsets": self.list_offsets,
                "nprobe": np.asarray([self.nprobe], np.int64)}


def _flat_kmeans(x: np.ndarray, k: int, seed: int, niter: int, max_ppc: int) -> tuple[np.ndarray, np.ndarray]:
    if k <= 1 or x.shape[0] <= 1:
        cent = x.mean(0, keepdims=True) if x.shape[0] else np.zeros((1, x.shape[1]), np.float32)
        return cent.astype(np.float32), np.zeros(x.shape[0], np.int64)
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, verbose=False,
                      max_points_per_centroid=max_ppc, min_points_per_centroid=1)
    with faiss_threads(min(x.shape[0], k * max_ppc) * k * x.shape[1] * niter):
        km.train(x)
    with faiss_threads(x.shape[0] * k * x.shape[1]):
        _, lab = km.index.search(x, 1)
    return km.centroids.astype(np.float32), lab[:, 0].astype(np.int64)


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, niter: int = _KMEANS_ITER,
           max_points_per_centroid: int = _KMEANS_MAX_POINTS_PER_CENTROID, flat_max: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Seeded k-means of x (n, K) into about k clusters: (centroids, label per row).

    Up to ``flat_max`` clusters it is faiss's k-means. Beyond, it is two-level: √k coarse
    clusters, then each coarse cluster split in proportion to its size. That costs
    O(n·√k·K) per iteration instead of O(n·k·K) (4096 lists over 1M items: seconds, not
    minutes, on two cores) for lists that serve IVF probing equally well.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    k = int(max(1, min(k, n // _MIN_POINTS_PER_LIST if n >= _MIN_POINTS_PER_LIST else 1)))
    if k <= flat_max:
        return _flat_kmeans(x, k, seed, niter, max_points_per_centroid)
    k1 = int(round(math.sqrt(k)))
    _, coarse = _flat_kmeans(x, k1, seed, niter, max_points_per_centroid)
    cents: list[np.ndarray] = []
    labels = np.empty(n, np.int64)
    for g in range(k1):
        rows = np.flatnonzero(coarse == g)
        if rows.size == 0:
            continue
        k_g = int(max(1, min(round(k * rows.size / n), rows.size // _MIN_POINTS_PER_LIST)))
        c_g, l_g = _flat_kmeans(x[rows], k_g, seed + 1 + g, niter, max_points_per_centroid)
        labels[rows] = l_g + sum(c.shape[0] for c in cents)
        cents.append(c_g)
    return np.concatenate(cents), labels


def _segment_argmax(values: np.ndarray, seg: np.ndarray, n_seg: int) -> np.ndarray:
    """Per segment id 0..n_seg−1, the index of the largest value (−1 for empty segments)."""
    order = np.lexsort((values, seg))
    last = np.full(n_seg, -1, np.int64)
    last[seg[order]] = order  # later (larger) entries overwrite earlier ones
    return last


def _segment_mean(x: np.ndarray, seg: np.ndarray, n_seg: int) -> tuple[np.ndarray, np.ndarray]:
    """Per segment, the mean row of x (zeros where empty) and the count."""
    counts = np.bincount(seg, minlength=n_seg)
    sums = np.zeros((n_seg, x.shape[1]), np.float64)
    if x.shape[0]:
        _add_sorted(sums, x, seg)
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32), counts


def _add_sorted(sums: np.ndarray, x: np.ndarray, seg: np.ndarray) -> None:
    order = np.argsort(seg, kind="stable")
    s = seg[order]
    starts = np.flatnonzero(np.r_[True, np.diff(s) != 0])
    sums[s[starts]] += np.add.reduceat(x[order].astype(np.float64), starts, axis=0)


def _two_means(x: np.ndarray, lab: np.ndarray, cent: np.ndarray, niter: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """2-means inside every list at once: (side per row, centroid 0, centroid 1, squared error after) per list.

    Start: each list cut by the sign of its members' projection on the list's top principal
    direction (a few power iterations, all lists at once) — robust where farthest-point seeds
    are not (in high dimension every member is about as far from the centroid).
    """
    n_l = cent.shape[0]
    r = x - cent[lab]
    v = np.ones((n_l, x.shape[1]), np.float32) / np.sqrt(x.shape[1])
    v[:, ::2] *= -1.0  # a start not orthogonal to typical directions
    for _ in range(6):
        proj = np.einsum("ij,ij->i", r, v[lab])
        v, _ = _segment_mean(r * proj[:, None], lab, n_l)
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-30)
    side = np.einsum("ij,ij->i", r, v[lab]) > 0
    del r
    c0 = c1 = cent
    for it in range(niter + 1):
        means, counts = _segment_mean(x, 2 * lab + side, 2 * n_l)
        c0 = np.where(counts[0::2, None] > 0, means[0::2], cent)
        c1 = np.where(counts[1::2, None] > 0, means[1::2], cent)
        d0 = ((x - c0[lab]) ** 2).sum(1)
        d1 = ((x - c1[lab]) ** 2).sum(1)
        if it < niter:
            side = d1 < d0
    err = np.bincount(lab, np.minimum(d0, d1), minlength=n_l)
    return d1 < d0, c0, c1, err


def split_mixed_lists(x: np.ndarray, cent: np.ndarray, lab: np.ndarray, gain: float = DEFAULT_SPLIT_GAIN,
                      width: float = DEFAULT_SPLIT_WIDTH, rounds: int = _SPLIT_ROUNDS,
                      width_median: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split every k-means list whose members form two separate groups: (centroids, labels) with more lists.

    k-means with fewer iterations than it needs to converge (random start, a sample per
    centroid) leaves lists that straddle two separated clusters; their centroid lies between
    the two, far from every member, so a query probing by centroid distance skips the list and
    misses the neighbours in it (all misses of the IVF on the isotropic 2,000-component mixture,
    BENCHMARKS.md, issue 27). Per round, 2-means inside every list at once; a list is split
    where it removes ≥ ``gain`` of the list's squared error (one Gaussian cluster: a few %).
    A list is also split where its mean squared radius exceeds ``width`` × the median list's
    (``width_median`` "lists", the default :data:`DEFAULT_WIDTH_MEDIAN`) or the item-weighted
    median ("items").
    Deterministic (seeds are the farthest members; no randomness).
    """
    width_median = DEFAULT_WIDTH_MEDIAN if width_median is None else width_median
    if width_median not in WIDTH_MEDIANS:
        raise ValueError(f"width_median must be one of {WIDTH_MEDIANS}, not {width_median!r}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    cent = np.asarray(cent, np.float32)
    lab = np.asarray(lab, np.int64).copy()
    if x.shape[0] < _SPLIT_MIN_MEMBERS:
        return cent, lab
    for _ in range(rounds):
        n_l = cent.shape[0]
        means, counts = _segment_mean(x, lab, n_l)
        cent = np.where(counts[:, None] > 0, means, cent)
        before = np.bincount(lab, ((x - cent[lab]) ** 2).sum(1), minlength=n_l)
        side, c0, c1, after = _two_means(x, lab, cent)
        sizes1 = np.bincount(lab[side], minlength=n_l)
        radius = before / np.maximum(counts, 1)
        typical = np.median(radius[counts > 0]) if width_median == "lists" else np.median(np.repeat(radius, counts))
        wide = radius > width * float(typical) if width > 0 else np.zeros(n_l, bool)
        split = ((after <= (1.0 - gain) * before) | wide) & (sizes1 > 0) & (sizes1 < counts) & (counts >= _SPLIT_MIN_MEMBERS)
        if not split.any():
            break
        new_id = np.full(n_l, -1, np.int64)
        new_id[split] = n_l + np.arange(int(split.sum()))
        move = side & split[lab]
        lab[move] = new_id[lab[move]]
        cent = np.concatenate([np.where(split[:, None], c0, cent), c1[split]]).astype(np.float32)
    return _reassign(x, cent, lab)


def _reassign(x: np.ndarray, cent: np.ndarray, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One Lloyd step after the splits: centroids = means (empty lists keep theirs), then every row to
    its nearest centroid (:func:`nearest_lists`)."""
    means, counts = _segment_mean(x, lab, cent.shape[0])
    cent = np.where(counts[:, None] > 0, means, cent).astype(np.float32)
    return nearest_lists(x, cent)


def nearest_lists(x: np.ndarray, cent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centroids, labels): every row in the list of its exactly nearest centroid; lists left empty are dropped.

    Probing ranks lists by their centroid's distance to the query, so a member must sit in
    the list of its nearest centroid: an item filed under a farther list is skipped by every
    query near it. Approximate assignment left 18% of the items of the 200 k 8-d mixture in
    another list (the two-level k-means labels within a coarse cluster; an HNSW graph over the
    centroids) and held its recall@10 at 0.985 probing 8 lists; the exact one reached 0.9998
    (BENCHMARKS.md, issue 27). Exact search is one BLAS pass, O(N · lists · K).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    cent = np.ascontiguousarray(cent, dtype=np.float32)
    if x.shape[0] == 0 or cent.shape[0] <= 1:
        return cent[:1] if cent.shape[0] else x.mean(0, keepdims=True).astype(np.float32), np.zeros(x.shape[0], np.int64)
    flat = faiss.IndexFlatL2(x.shape[1])
    flat.add(cent)
    with faiss_threads(x.shape[0] * cent.shape[0] * x.shape[1]):
        _, near = flat.search(x, 1)
    lab = near[:, 0].astype(np.int64)
    counts = np.bincount(lab, minlength=cent.shape[0])
    keep = np.flatnonzero(counts > 0)
    remap = np.full(cent.shape[0], -1, np.int64)
    remap[keep] = np.arange(keep.size)
    return cent[keep], remap[lab]
