"""Vector indexes (no model): inner-product form, exact search = brute force, IVF recall, persistence."""
from __future__ import annotations

import numpy as np
import pytest

from lrprec.recommend.index import (
    AUTO_IVF_MIN_ITEMS,
    ExactIndex,
    IndexDataError,
    IVFIndex,
    augment,
    choose_backend,
    default_nlist,
    kmeans,
    load_index_state,
    probe_lists,
    query_constants,
    query_vectors,
    weighted_distance,
)


def _brute(p: np.ndarray, pq: np.ndarray, w: np.ndarray, k: int, exclude: np.ndarray, members: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by the direct form over all items (or ``members``), ties by id; the excluded id never counts."""
    out_i, out_d = [], []
    for b in range(pq.shape[0]):
        ids = np.arange(p.shape[0]) if members is None else members
        ids = ids[ids != exclude[b]]
        d = weighted_distance(pq[b], p[ids], w[b])
        order = np.lexsort((ids, d))[:k]
        out_i.append(ids[order])
        out_d.append(d[order])
    return np.array(out_i), np.array(out_d)


def _mixture(n: int, dim: int, comps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((comps, dim)).astype(np.float32) * 3
    lab = rng.integers(0, comps, n)
    return (centers[lab] + 0.3 * rng.standard_normal((n, dim))).astype(np.float32), lab


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    p = rng.standard_normal((3000, 8)).astype(np.float32)
    cats = rng.integers(0, 4, 3000)
    w = rng.uniform(0.1, 3.0, (6, 8)).astype(np.float32)
    qi = rng.choice(3000, 6, replace=False)
    return p, cats, w, qi


def test_inner_product_form_equals_weighted_distance(data):
    p, _, w, qi = data
    v = augment(p)
    q = query_vectors(p[qi], w)
    via_ip = query_constants(p[qi], w)[:, None] - (q.astype(np.float64) @ v.T.astype(np.float64))
    direct = weighted_distance(p[qi][:, None, :], p[None, :, :], w[:, None, :])
    np.testing.assert_allclose(via_ip, direct, rtol=1e-5, atol=1e-4)
    # and in float32, as the index computes it: the ranking key differs from d by a per-query constant
    via_ip32 = query_constants(p[qi], w)[:, None] - (q @ v.T)
    np.testing.assert_allclose(via_ip32, direct, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("chunk_elems", [1 << 22, 1 << 18, 2000])  # one chunk, and many chunks (threshold merge path)
def test_exact_search_equals_brute_force(data, chunk_elems):
    p, cats, w, qi = data
    ex = ExactIndex(p, cats, chunk_elems=chunk_elems)
    got = ex.search(p[qi], w, 15, exclude=qi)
    ids, d = _brute(p, p[qi], w, 15, qi)
    np.testing.assert_array_equal(got.ids, ids)
    np.testing.assert_allclose(got.distances, d, rtol=1e-12)
    assert not (got.ids == qi[:, None]).any()


def test_exact_per_category_equals_brute_force(data):
    p, cats, w, qi = data
    ex = ExactIndex(p, cats)
    got = ex.search_per_category(p[qi[0]], w[0], 7, exclude=qi[0])
    assert got.ids.shape == (4, 7)
    for c in range(4):
        ids, d = _brute(p, p[qi[:1]], w[:1], 7, qi[:1], members=np.flatnonzero(cats == c))
        np.testing.assert_array_equal(got.ids[c], ids[0])
        assert (cats[got.ids[c]] == c).all()


def test_query_item_never_returned_even_with_exact_duplicates():
    rng = np.random.default_rng(1)
    p = rng.standard_normal((50, 4)).astype(np.float32)
    p[10] = p[3]  # an exact duplicate of the query: distance 0, must still be recommended
    for ix in (ExactIndex(p), IVFIndex(p, nlist=1)):
        got = ix.search(p[3], np.ones(4, np.float32), 49, exclude=np.array([3]))
        assert 3 not in got.ids[0]
        assert got.ids[0, 0] == 10 and got.distances[0, 0] == 0.0
        assert sorted(got.ids[0].tolist()) == [i for i in range(50) if i != 3]


def test_k_beyond_catalog_is_padded():
    p = np.random.default_rng(2).standard_normal((5, 3)).astype(np.float32)
    got = ExactIndex(p).search(p[0], np.ones(3, np.float32), 8, exclude=np.array([0]))
    assert (got.ids[0, :4] >= 0).all() and (got.ids[0, 4:] == -1).all() and np.isinf(got.distances[0, 4:]).all()


def test_different_weights_change_the_ranking():
    rng = np.random.default_rng(3)
    p = rng.standard_normal((500, 6)).astype(np.float32)
    ex = ExactIndex(p)
    w1 = np.array([1, 1, 1, 1e-3, 1e-3, 1e-3], np.float32)
    w2 = w1[::-1].copy()
    a = ex.search(p[0], w1, 10, exclude=np.array([0])).ids
    b = ex.search(p[0], w2, 10, exclude=np.array([0])).ids
    assert set(a[0]) != set(b[0])


def test_ivf_recall_on_clustered_data_and_exact_distances():
    p, _ = _mixture(20000, 16, 200, seed=4)
    rng = np.random.default_rng(5)
    w = np.exp(rng.normal(0, 0.5, (20, 16))).astype(np.float32) ** 2
    qi = rng.choice(len(p), 20, replace=False)
    ivf = IVFIndex(p, nlist=128, nprobe=8, seed=0)
    got = ivf.search(p[qi], w, 10, exclude=qi)
    truth = ExactIndex(p).search(p[qi], w, 10, exclude=qi)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.ids, truth.ids)])
    assert recall >= 0.95
    # returned distances are exact (re-ranked with the direct form)
    np.testing.assert_allclose(got.distances, weighted_distance(p[qi][:, None], p[got.ids], w[:, None]), rtol=1e-12)


def test_ivf_probing_all_lists_is_exact(data):
    p, cats, w, qi = data
    ivf = IVFIndex(p, cats, nlist=32, seed=0)
    ivf.nprobe = ivf.nlist
    ex = ExactIndex(p, cats)
    np.testing.assert_array_equal(ivf.search(p[qi], w, 10, exclude=qi).ids, ex.search(p[qi], w, 10, exclude=qi).ids)
    # per category, probing every list of the category is exact too
    got = ivf.search_per_category(p[qi[1]], w[1], 5, exclude=qi[1])
    want = ex.search_per_category(p[qi[1]], w[1], 5, exclude=qi[1])
    np.testing.assert_array_equal(got.ids, want.ids)


def test_ivf_lists_are_category_pure(data):
    p, cats, _, _ = data
    ivf = IVFIndex(p, cats, nlist=32, seed=0)
    for c in range(4):
        lo, hi = ivf.list_offsets[c], ivf.list_offsets[c + 1]
        in_lists = (ivf.assign >= lo) & (ivf.assign < hi)
        np.testing.assert_array_equal(in_lists, cats == c)


def test_ivf_state_roundtrip_and_determinism(data):
    p, cats, w, qi = data
    a = IVFIndex(p, cats, nlist=32, nprobe=4, seed=7)
    b = IVFIndex(p, cats, nlist=32, nprobe=4, seed=7)
    np.testing.assert_array_equal(a.assign, b.assign)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    c = load_index_state("ivf", p, cats, a.state(), nprobe=4)
    np.testing.assert_array_equal(a.search(p[qi], w, 10, exclude=qi).ids, c.search(p[qi], w, 10, exclude=qi).ids)
    with pytest.raises(IndexDataError):
        load_index_state("ivf", p[:100], cats[:100], a.state())


def test_two_level_kmeans_gives_about_k_lists():
    p, _ = _mixture(30000, 8, 50, seed=6)
    cent, lab = kmeans(p, 400, seed=0, flat_max=64)
    assert 300 <= cent.shape[0] <= 500
    assert lab.min() == 0 and lab.max() == cent.shape[0] - 1


def test_backend_choice_and_bad_input():
    assert choose_backend("auto", AUTO_IVF_MIN_ITEMS - 1) == "exact"
    assert choose_backend("auto", AUTO_IVF_MIN_ITEMS) == "ivf"
    assert default_nlist(1_000_000) == 4096
    with pytest.raises(IndexDataError, match="unknown index backend"):
        choose_backend("annoy", 10)
    p = np.zeros((10, 3), np.float32)
    with pytest.raises(IndexDataError):
        ExactIndex(p.astype(np.float64))
    with pytest.raises(IndexDataError):
        ExactIndex(p).search(np.zeros(4, np.float32), np.ones(3, np.float32), 3)
    with pytest.raises(IndexDataError):
        ExactIndex(p).search(np.zeros(3, np.float32), np.ones(3, np.float32), 0)


def _probe_reference(d: np.ndarray, nprobe: int, max_nprobe: int, spread: np.ndarray, d_ref: np.ndarray, reach: float,
                     ratio: float) -> list[list[int]]:
    """The rules written out per row: the nprobe nearest lists, then (nearest first) every list with
    d <= (1 + ratio) * d_nearest (ratio > 0) or sqrt(d) <= sqrt(d_ref) + reach * sqrt(spread), at most
    max(nprobe, max_nprobe) lists."""
    out = []
    for row, sp, dr in zip(d, spread, d_ref):
        order = np.argsort(row, kind="stable")[: max(nprobe, max_nprobe)]
        out.append([int(j) for r, j in enumerate(order)
                    if r < nprobe or np.sqrt(row[j]) <= np.sqrt(dr) + reach * np.sqrt(sp[j])
                    or (ratio > 0 and row[j] <= (1 + ratio) * row.min())])
    return out


@pytest.mark.parametrize("nprobe,max_nprobe,reach,ratio", [(1, 8, 0.0, 0.0), (3, 8, 0.5, 0.0), (2, 5, 1.0, 0.5), (2, 40, 3.0, 0.0),
                                                           (4, 2, 1.0, 0.0), (1, 30, 0.0, 0.8)])
def test_probe_lists_follows_the_rule(nprobe, max_nprobe, reach, ratio):
    rng = np.random.default_rng(8)
    d = rng.uniform(1.0, 9.0, (7, 30))
    spread = rng.uniform(0.0, 1.0, (7, 30))
    d_ref = rng.uniform(0.5, 3.0, 7)
    got = probe_lists(d, nprobe, max_nprobe, spread, d_ref, reach, ratio)
    for row, want in zip(got, _probe_reference(d, nprobe, max_nprobe, spread, d_ref, reach, ratio)):
        assert sorted(row[row >= 0].tolist()) == sorted(want)
        assert (row[len(want):] == -1).all()
    # without a reference distance: exactly the nprobe nearest, nearest first
    np.testing.assert_array_equal(probe_lists(d, nprobe, max_nprobe), np.argsort(d, axis=1, kind="stable")[:, :nprobe])


def test_adaptive_probing_covers_a_cluster_split_into_many_lists():
    """A big isotropic blob cut into many lists plus small far blobs: a query in the blob needs many of its lists.

    Fixed nprobe 2 misses neighbours; the second round (lists within reach of the k-th
    distance found) returns the exact top-k.
    """
    rng = np.random.default_rng(9)
    big = rng.standard_normal((3000, 16)).astype(np.float32)
    small = (rng.standard_normal((20, 16)) * 12)[np.repeat(np.arange(20), 60)] + 0.3 * rng.standard_normal((1200, 16))
    p = np.concatenate([big, small.astype(np.float32)])
    w = np.exp(rng.normal(0, 0.3, (5, 16))).astype(np.float32) ** 2
    qi = np.array([0, 1, 2, 3, 3000])  # four in the big blob, one in a small one
    ivf = IVFIndex(p, nlist=64, nprobe=2, reach=0.0, probe_ratio=0.0, seed=0)
    truth = ExactIndex(p).search(p[qi], w, 10, exclude=qi).ids
    fixed = ivf.search(p[qi], w, 10, exclude=qi).ids
    assert (fixed[:4] != truth[:4]).any()
    ivf.reach = 1.0
    np.testing.assert_array_equal(ivf.search(p[qi], w, 10, exclude=qi).ids, truth)


@pytest.mark.parametrize("nprobe,max_nprobe,ratio", [(8, 128, 1.0), (4, 128, 1.0), (16, 16, 0.0), (1, 30, 0.8), (8, 10, 3.0),
                                                      (0, 128, 1.0), (300, 128, 1.0), (5, 128, 0.0)])
def test_first_round_probing_matches_the_rule_on_many_lists(nprobe, max_nprobe, ratio):
    """Without a second round, probe_lists sorts only lists under a subsampled bound: same lists, same order
    (nearest first, ties by list id), also with ties, +inf lists (other categories) and a single query."""
    rng = np.random.default_rng(10)
    d = rng.uniform(1.0, 9.0, (6, 4096)).astype(np.float32)
    d[1, rng.choice(4096, 50, replace=False)] = 1.5  # ties
    d[2, :4000] = np.inf  # only a few lists of this query's category
    d[3, :] = np.inf  # no list at all
    d[4, rng.choice(4096, 40, replace=False)] = rng.uniform(1.0, 1.2, 40)  # a cluster cut into many lists
    for rows in (d, *(d[i:i + 1] for i in range(len(d)))):  # a batch, and each query alone (the single-query path)
        got = probe_lists(rows, nprobe, max_nprobe, ratio=ratio)
        cap = max(nprobe, max_nprobe) if ratio > 0 else nprobe
        for row, out in zip(rows, got):
            order = [j for j in np.argsort(row, kind="stable")[:cap] if np.isfinite(row[j])]
            want = [int(j) for r, j in enumerate(order) if r < nprobe or (ratio > 0 and row[j] <= (1 + ratio) * row.min())]
            assert out[: len(want)].tolist() == want
            assert (out[len(want):] == -1).all()
        assert got.shape[1] == max(len([x for x in o if x >= 0]) for o in got)
