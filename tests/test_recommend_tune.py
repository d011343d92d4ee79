"""Issue 27: the IVF index measures how many lists to probe on validation queries of its own catalog."""
from __future__ import annotations

import numpy as np

from lrprec.recommend.index import ExactIndex, IVFIndex, build_index, load_index_state
from lrprec.recommend.tune import default_weights, exact_neighbours, recall


def _elongated(n: int, dim: int, comps: int, intrinsic: int, seed: int) -> np.ndarray:
    """Components spread over random low-dimensional subspaces (like the benchmark's 8-d mixture): hard for IVF."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((comps, dim)) * 1.5
    lab = rng.integers(0, comps, n)
    bases = np.linalg.qr(rng.standard_normal((comps, dim, intrinsic)))[0]
    z = rng.standard_normal((n, intrinsic)) * np.sqrt(dim / intrinsic) * 0.4
    return (centers[lab] + np.einsum("nk,ndk->nd", z, bases[lab]) + 0.04 * rng.standard_normal((n, dim))).astype(np.float32)


def test_exact_neighbours_equals_the_exact_backend():
    rng = np.random.default_rng(0)
    p = rng.standard_normal((5000, 12)).astype(np.float32)
    w = default_weights(12, seed=3)
    qi = rng.choice(5000, 8, replace=False)
    wq = w[np.arange(8) % 4]
    got = exact_neighbours(p, p[qi], wq, 10, qi, step=700)  # chunks that do not divide N
    want = ExactIndex(p).search(p[qi], wq, 10, exclude=qi).ids
    assert (np.sort(got, 1) == np.sort(want, 1)).all()
    assert not (got == qi[:, None]).any()


def test_default_ivf_probes_enough_lists_on_hard_clustered_data():
    p = _elongated(20000, 24, 4, 8, seed=1)  # 4 components, 8-d each: ~60 lists apiece, many about equally near
    rng = np.random.default_rng(9)  # queries and users independent of the index's validation draw
    qi = rng.choice(len(p), 200, replace=False)
    w = np.exp(rng.normal(0.0, 0.5, (4, 24))).astype(np.float32) ** 2
    wq = w[np.arange(qi.size) % 4]
    truth = ExactIndex(p).search(p[qi], wq, 10, exclude=qi).ids
    fixed = IVFIndex(p, nlist=256, nprobe=8, seed=0)  # the pre-tuning default
    tuned = IVFIndex(p, nlist=256, seed=0)
    r_fixed = recall(fixed.search(p[qi], wq, 10, exclude=qi).ids, truth)
    r_tuned = recall(tuned.search(p[qi], wq, 10, exclude=qi).ids, truth)
    assert r_fixed < 0.99 <= r_tuned, (r_fixed, r_tuned, tuned.tuned)
    assert tuned.nprobe > 8 and tuned.tuned[-1] == (tuned.nprobe, max(r for _, r in tuned.tuned))
    # the measured probe count is part of the stored state; an explicit nprobe overrides it
    again = load_index_state("ivf", p, None, tuned.state())
    assert again.nprobe == tuned.nprobe
    assert load_index_state("ivf", p, None, tuned.state(), nprobe=8).nprobe == 8
    assert build_index(p, backend="ivf", nlist=256, nprobe=12).nprobe == 12


def test_easy_data_keeps_the_cheap_default():
    rng = np.random.default_rng(2)
    centers = rng.standard_normal((30, 16)).astype(np.float32) * 4
    p = (centers[rng.integers(0, 30, 6000)] + 0.2 * rng.standard_normal((6000, 16))).astype(np.float32)
    ivf = IVFIndex(p, nlist=32, seed=0)
    assert ivf.nprobe == 8 and len(ivf.tuned) == 1 and ivf.tuned[0][1] >= 0.995
