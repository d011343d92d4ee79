"""Benchmark the Milvus backend (issue 27) against the in-process faiss backends on the same vectors.

The isotropic Gaussian mixture of ``bench_index.py`` (``--components`` centres, K = 100), one
Milvus Lite collection (a local .db file, in-process server; FLAT = exact inner product over
[p, p²], the only index type Milvus Lite serves) holding the augmented vectors and the
category, queried through :class:`lrprec.recommend.milvus.MilvusIndex` exactly as the
recommender does (k + margin candidates, re-ranked in float64), single queries under 4 users'
weights. Reported: insert time, recall@10 against the exact backend, single-query QPS of
Milvus, faiss exact and faiss IVF (the default backend), and the ratios — one run, same queries.

    python benchmarks/bench_milvus.py --n 200000
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_index import gaussian_mixture, recall_at, user_weights  # noqa: E402
from lrprec.recommend.index import ExactIndex, IVFIndex  # noqa: E402
from lrprec.recommend.milvus import MilvusIndex, connect  # noqa: E402


def timed_single(search, p, qi, wq, k=10) -> tuple[np.ndarray, float]:
    found = np.empty((qi.size, k), np.int64)
    t0 = time.perf_counter()
    for i in range(qi.size):
        found[i] = search(p[qi[i]], wq[i], k, qi[i:i + 1]).ids[0]
    return found, qi.size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--components", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--categories", type=int, default=8)
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    p = gaussian_mixture(args.n, args.dim, rng, args.components)
    cats = rng.integers(0, args.categories, args.n)
    w_users = user_weights(args.dim, rng, 4)
    qi = rng.choice(args.n, args.queries, replace=False)
    wq = w_users[np.arange(args.queries) % 4]
    exact = ExactIndex(p, cats)
    truth = np.concatenate([exact.search(p[qi[s:s + 100]], wq[s:s + 100], 10, exclude=qi[s:s + 100]).ids for s in range(0, qi.size, 100)])
    _, exact_qps = timed_single(exact.search, p, qi[:20], wq[:20])
    t0 = time.perf_counter()
    ivf = IVFIndex(p, cats, seed=0)
    ivf_build = time.perf_counter() - t0
    ivf_found, ivf_qps = timed_single(ivf.search, p, qi, wq)
    with tempfile.TemporaryDirectory(prefix="bench-milvus-") as tmp:
        client = connect(str(Path(tmp) / "bench.db"))
        t0 = time.perf_counter()
        mil = MilvusIndex.create(client, "bench", "bench", "also_viewed", p, p, cats, [str(i) for i in range(args.n)], args.categories)
        insert_s = time.perf_counter() - t0
        mil_found, mil_qps = timed_single(lambda a, b, c, d: mil.search(a, b, c, d), p, qi, wq)
        t0 = time.perf_counter()
        for i in range(20):
            mil.search_per_category(p[qi[i]], wq[i], 10, int(qi[i]))
        per_cat_s = (time.perf_counter() - t0) / 20
        db_mb = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file()) / 1e6
    print(f"# bench_milvus: N = {args.n:,}, K = {args.dim}, {args.components} components, {args.categories} categories, "
          f"{args.queries} single queries, 4 users; load average {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end\n")
    print("| backend | build / insert s | recall@10 | queries/s | × faiss exact | × faiss IVF |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| faiss exact | {exact.build_seconds:.1f} | 1.0000 | {exact_qps:.1f} | 1.0 | {exact_qps / ivf_qps:.3f} |")
    print(f"| faiss IVF (default) | {ivf_build:.1f} | {recall_at(ivf_found, truth):.4f} | {ivf_qps:.1f} | {ivf_qps / exact_qps:.1f} | 1.0 |")
    print(f"| Milvus Lite FLAT | {insert_s:.1f} | {recall_at(mil_found, truth):.4f} | {mil_qps:.1f} | {mil_qps / exact_qps:.2f} | {mil_qps / ivf_qps:.3f} |")
    print(f"\nMilvus per-category query (one grouped search, {args.categories} categories, k = 10): {per_cat_s * 1e3:.0f} ms; "
          f"Milvus Lite files on disk: {db_mb:.0f} MB ({db_mb * 1e6 / args.n:.0f} bytes/item)")


if __name__ == "__main__":
    main()
