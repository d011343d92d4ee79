"""Benchmark the Milvus backend (issue 27) against the in-process faiss backends on the same vectors.

The isotropic Gaussian mixture of ``bench_index.py`` (``--components`` centres, K = 100), one
Milvus Lite collection (a local .db file, in-process server; FLAT = exact inner product over
[p, p²], the only index type Milvus Lite serves) holding the augmented vectors and the
category, queried through :class:`lrprec.recommend.milvus.MilvusIndex` exactly as the
recommender does (k + margin candidates, re-ranked in float64), single queries under 4 users'
weights. Reported: insert time, recall@10 against the exact backend, single-query QPS of
Milvus, faiss exact and faiss IVF (the default backend), and the ratios — one run, same queries.

    python benchmarks/bench_milvus.py --n 200000

``--ivf-state FILE`` loads the faiss IVF lists from FILE when it exists (else builds and saves
them): the 1 M-item IVF build takes many minutes on a loaded machine and its lists do not
change between runs on the same seed. ``--milvus-queries`` times fewer single queries on
Milvus than on faiss (a Lite FLAT query scans all N items); recall compares the same queries.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_index import gaussian_mixture, recall_at, rss_mb, user_weights  # noqa: E402
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
    ap.add_argument("--milvus-queries", type=int, default=None, help="single queries timed on Milvus (default: --queries)")
    ap.add_argument("--categories", type=int, default=8)
    ap.add_argument("--ivf-state", default=None, help="load the IVF lists from this .npz if it exists, else build and save them")
    ap.add_argument("--db", default=None, help="Milvus Lite file (alone in its folder) to keep; a later call with the same --n reuses its rows")
    ap.add_argument("--build-only", action="store_true", help="build the IVF lists and fill Milvus (with --ivf-state, --db), time nothing")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    t_start = time.perf_counter()
    rng = np.random.default_rng(0)
    p = gaussian_mixture(args.n, args.dim, rng, args.components)
    cats = rng.integers(0, args.categories, args.n)
    w_users = user_weights(args.dim, rng, 4)
    qi = rng.choice(args.n, args.queries, replace=False)
    wq = w_users[np.arange(args.queries) % 4]
    mq = min(args.milvus_queries or args.queries, args.queries)
    exact = ExactIndex(p, cats)
    truth = np.concatenate([exact.search(p[qi[s:s + 100]], wq[s:s + 100], 10, exclude=qi[s:s + 100]).ids for s in range(0, qi.size, 100)])
    _, exact_qps = timed_single(exact.search, p, qi[:2 if args.build_only else 20], wq[:20])
    exact_s = exact.build_seconds
    del exact
    t0 = time.perf_counter()
    if args.ivf_state and Path(args.ivf_state).is_file():
        ivf = IVFIndex(p, cats, state=dict(np.load(args.ivf_state)))
        ivf_how = f"loaded from {args.ivf_state}"
    else:
        ivf = IVFIndex(p, cats, seed=0)
        ivf_how = "built"
        if args.ivf_state:
            np.savez(args.ivf_state, **ivf.state())
    ivf_build = time.perf_counter() - t0
    ivf_found, ivf_qps = timed_single(ivf.search, p, qi[:10] if args.build_only else qi, wq)
    print(f"faiss: exact {exact_qps:.1f} q/s, IVF ({ivf_how} in {ivf_build:.0f} s, nprobe {ivf.nprobe}) {ivf_qps:.0f} q/s, "
          f"recall {recall_at(ivf_found, truth[:len(ivf_found)]):.4f}", flush=True)
    del ivf
    with tempfile.TemporaryDirectory(prefix="bench-milvus-") as tmp:
        db = Path(args.db) if args.db else Path(tmp) / "bench.db"
        rss0 = rss_mb()  # Milvus Lite 3 runs inside this process: its memory is this process's growth
        client = connect(str(db))
        t0 = time.perf_counter()
        if args.db and client.has_collection("bench"):  # rows inserted by an earlier call on the same vectors
            mil = MilvusIndex(client, "bench", "bench", args.dim, args.categories)
            if mil.count() != args.n:
                raise SystemExit(f"{db} holds {mil.count()} rows, not {args.n}: remove it")
            insert_how = f"reused {db}"
        else:
            mil = MilvusIndex.create(client, "bench", "bench", "also_viewed", p, p, cats, [str(i) for i in range(args.n)], args.categories)
            insert_how = "inserted"
        insert_s = time.perf_counter() - t0
        server_mb = rss_mb() - rss0
        print(f"Milvus Lite: {args.n:,} rows {insert_how} in {insert_s:.0f} s ({args.n / insert_s:.0f} rows/s); RSS growth {server_mb:.0f} MB", flush=True)
        if args.build_only:
            return
        mil_found, mil_qps = timed_single(lambda a, b, c, d: mil.search(a, b, c, d), p, qi[:mq], wq[:mq])
        t0 = time.perf_counter()
        for i in range(5):
            mil.search_per_category(p[qi[i]], wq[i], 10, int(qi[i]))
        per_cat_s = (time.perf_counter() - t0) / 5
        server_mb = max(server_mb, rss_mb() - rss0)
        db_mb = sum(f.stat().st_size for f in db.parent.rglob("*") if f.is_file()) / 1e6
    print(f"total {time.perf_counter() - t_start:.0f} s\n")
    ivf_recall, mil_recall = recall_at(ivf_found, truth), recall_at(mil_found, truth[:mq])
    print(f"# bench_milvus: N = {args.n:,}, K = {args.dim}, {args.components} components, {args.categories} categories, "
          f"{args.queries} single queries ({mq} on Milvus), 4 users; load average {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end\n")
    print("| backend | build / insert s | recall@10 | queries/s | × faiss exact | × faiss IVF |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| faiss exact | {exact_s:.1f} | 1.0000 | {exact_qps:.1f} | 1.0 | {exact_qps / ivf_qps:.3f} |")
    print(f"| faiss IVF (default) | {ivf_build:.1f} | {ivf_recall:.4f} | {ivf_qps:.1f} | {ivf_qps / exact_qps:.1f} | 1.0 |")
    print(f"| Milvus Lite FLAT | {insert_s:.1f} | {mil_recall:.4f} ({mq} queries) | {mil_qps:.1f} | {mil_qps / exact_qps:.2f} | {mil_qps / ivf_qps:.3f} |")
    print(f"\nMilvus per-category query (one grouped search, {args.categories} categories, k = 10): {per_cat_s * 1e3:.0f} ms; "
          f"Milvus Lite files on disk: {db_mb:.0f} MB ({db_mb * 1e6 / args.n:.0f} bytes/item); Milvus Lite's RSS growth {server_mb:.0f} MB; "
          f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
