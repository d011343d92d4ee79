"""IVF with random categories that cut across clusters (eq 5, one filtered search per category), issue 27 session 10.

The faiss part of ``benchmarks/bench_milvus.py`` on its exact vectors, categories, users and
queries (same generator, seed 0), without Milvus: build and save the IVF lists outside the
timing lock, then time the exact single query and each saved list set's single query in one run.

    python bench_categories_1m.py --build NEW.npz                        # lists of the current code
    python bench_categories_1m.py --compare OLD.npz NEW.npz              # timed (under the lock)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_index import gaussian_mixture, recall_at, user_weights  # noqa: E402
from bench_milvus import timed_single  # noqa: E402
from lrprec.recommend.index import ExactIndex, IVFIndex  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--components", type=int, default=2000)
    ap.add_argument("--categories", type=int, default=8)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--exact-single", type=int, default=20)
    ap.add_argument("--build", default=None, help="build the IVF lists with the current code and save them here")
    ap.add_argument("--compare", nargs="+", default=[], help="saved list sets to time against the exact single query")
    args = ap.parse_args()
    print(f"load average at the start {os.getloadavg()[0]:.2f}", flush=True)
    rng = np.random.default_rng(0)  # the order of draws is bench_milvus.py's
    p = gaussian_mixture(args.n, 100, rng, args.components)
    cats = rng.integers(0, args.categories, args.n)
    w_users = user_weights(100, rng, 4)
    qi = rng.choice(args.n, args.queries, replace=False)
    wq = w_users[np.arange(args.queries) % 4]
    if args.build:
        t0 = time.perf_counter()
        ivf = IVFIndex(p, cats, seed=0)
        np.savez(args.build, **ivf.state())
        sizes = np.bincount(ivf.assign)
        print(f"built in {time.perf_counter() - t0:.0f} s: {ivf.nlist} lists (median {np.median(sizes):.0f} items, "
              f"90th percentile {np.percentile(sizes, 90):.0f}), measured probe count {ivf.nprobe}, validation {ivf.tuned}", flush=True)
        return
    exact = ExactIndex(p, cats)
    truth = np.concatenate([exact.search(p[qi[s:s + 100]], wq[s:s + 100], 10, exclude=qi[s:s + 100]).ids for s in range(0, qi.size, 100)])
    _, exact_qps = timed_single(exact.search, p, qi[:args.exact_single], wq)
    del exact
    print(f"exact single query: {exact_qps:.1f} q/s ({args.exact_single} queries)", flush=True)
    print("| lists | lists (count) | measured probe count | recall@10 (worst user) | IVF q/s | × exact single query |")
    print("|---|---:|---:|---|---:|---:|")
    for path in args.compare:
        ivf = IVFIndex(p, cats, state=dict(np.load(path)))
        found, qps = timed_single(ivf.search, p, qi, wq)
        per_user = [recall_at(found[u::4], truth[u::4]) for u in range(4)]
        print(f"| {path} | {ivf.nlist} | {ivf.nprobe} | {recall_at(found, truth):.4f} ({min(per_user):.4f}) | {qps:.0f} | {qps / exact_qps:.1f}× |", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
