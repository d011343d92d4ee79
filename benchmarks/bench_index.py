"""Benchmark the recommendation indexes (issue 5) on synthetic item vectors, no images needed.

Claims measured in one run, on the same machine and the same data:

(a) exact batched search throughput as a fraction of the memory bandwidth measured here
    (a multi-threaded read of a large array): the "effective" rate counts the index bytes
    each query would have to read on its own (queries/s × bytes of vᵀ), the "pass" rate the
    bytes actually streamed per batch; target effective ≥ 50%.
(b) IVF recall@10 against the exact backend, and single-query queries/s against the exact
    single-query rate, for users with different θ, with a fixed number of probed lists and
    with adaptive probing (``nprobe`` nearest lists plus those within (1 + ratio) × the
    nearest's weighted distance, and optionally a second round of lists whose typical member
    could be nearer than the k-th neighbour found, ``reach`` × their weighted radius, see
    ``lrprec.recommend.index.probe_lists``); target
    recall@10 ≥ 0.99 at ≥ 100× the exact single-query rate on every dataset but uniform.

Datasets: ``lowdim`` (1000 Gaussian components spread over 8-dimensional subspaces),
``mixture`` (1000 isotropic 100-dimensional components), ``trained`` (item vectors of a
trained model — the default synthetic catalog, small CNN, the run's K (32 by default) — each of its 2000 items
replicated with Gaussian noise to N items, queried under the model's own global and
per-user θ; ``--trained-run RUN`` uses an existing run instead of training one, ~1–3 min),
``uniform`` (no structure; not a target).

Build time and memory (RSS) are recorded. Prints a markdown table.

    python benchmarks/bench_index.py            # full mode: 1,000,000 items, K = 100 (trained: the run's K)
    python benchmarks/bench_index.py --quick    # quick mode: 100,000 items
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lrprec.recommend.hnsw import HNSWIndex  # noqa: E402
from lrprec.recommend.index import ExactIndex, IVFIndex, default_nlist  # noqa: E402
from lrprec.recommend.ivf import DEFAULT_SPLIT_GAIN, DEFAULT_SPLIT_WIDTH  # noqa: E402
from lrprec.recommend.tune import DEFAULT_TUNE_TARGET  # noqa: E402


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc; 0 where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def best_time(fn, reps: int = 3) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def memory_bandwidth(nbytes: int = 512_000_000) -> dict[str, float]:
    """Read bandwidth (GB/s): best of a multi-threaded sum (torch, all threads) and numpy's sum."""
    x = np.ones(nbytes // 4, np.float32)
    out = {"numpy_sum": x.nbytes / best_time(lambda: x.sum(), 3) / 1e9}
    try:
        import torch

        t = torch.from_numpy(x)
        out["torch_sum"] = x.nbytes / best_time(lambda: t.sum(), 3) / 1e9
    except ImportError:
        pass
    dst = np.empty_like(x)
    out["copy_read+write"] = 2 * x.nbytes / best_time(lambda: np.copyto(dst, x), 3) / 1e9
    out["read"] = max(v for k, v in out.items() if k != "copy_read+write")
    return out


def gaussian_mixture(n: int, dim: int, rng: np.random.Generator, components: int = 1000) -> np.ndarray:
    """Clustered vectors: ``components`` Gaussians, centers N(0, I), per-component σ ~ U(0.2, 0.5), Zipf-ish sizes."""
    centers = rng.standard_normal((components, dim)).astype(np.float32)
    sizes = 1.0 / np.arange(1, components + 1) ** 0.5
    comp = rng.choice(components, size=n, p=sizes / sizes.sum())
    sigma = rng.uniform(0.2, 0.5, components).astype(np.float32)
    x = np.empty((n, dim), np.float32)
    step = 1 << 17
    for s in range(0, n, step):
        c = comp[s:s + step]
        x[s:s + step] = centers[c] + sigma[c, None] * rng.standard_normal((c.size, dim), dtype=np.float32)
    return x


def lowdim_mixture(n: int, dim: int, rng: np.random.Generator, components: int = 1000, intrinsic: int = 8) -> np.ndarray:
    """Clustered vectors with low intrinsic dimension, like learned embeddings: the mixture above, but each
    component spreads its variance over a random ``intrinsic``-dimensional subspace (plus 10% isotropic noise)."""
    centers = rng.standard_normal((components, dim)).astype(np.float32)
    sizes = 1.0 / np.arange(1, components + 1) ** 0.5
    counts = rng.multinomial(n, sizes / sizes.sum())
    sigma = rng.uniform(0.2, 0.5, components).astype(np.float32)
    x = np.empty((n, dim), np.float32)
    s = 0
    for c, m in enumerate(counts):
        basis, _ = np.linalg.qr(rng.standard_normal((dim, intrinsic)))
        z = rng.standard_normal((m, intrinsic)) * sigma[c] * np.sqrt(dim / intrinsic)
        x[s:s + m] = centers[c] + z @ basis.T + 0.1 * sigma[c] * rng.standard_normal((m, dim))
        s += m
    return x[rng.permutation(n)]


def uniform(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(-1.0, 1.0, (n, dim)).astype(np.float32)


def trained_vectors(n: int, rng: np.random.Generator, run_path: str | None, epochs: int, noise: float,
                    workdir: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(p, w_users, note): a trained model's item vectors replicated with noise to n items, and its users' θ².

    The model is ``run_path`` or, without it, a small CNN trained for ``epochs`` on the default
    synthetic catalog (seed 0) in ``workdir``. The first relation's vectors p_j = f(x_j) E_r of
    the catalog's items are each copied ⌈n / items⌉ times with N(0, s²) noise per coordinate,
    s = ``noise`` × (median nearest-neighbour distance among the items) / √K: a large catalog
    of new items that resemble the trained ones. Weights: the global θ_r and every user's θ_u,r.
    """
    import torch

    from lrprec.recommend.recommender import embed_catalog
    from lrprec.run import Run

    if run_path is None:
        from lrprec.data.synthetic import SynthConfig, generate
        from lrprec.train.trainer import TrainConfig, train

        data, run_path = workdir / "catalog", str(workdir / "run")
        generate(data, SynthConfig(seed=0), overwrite=True, progress=False)
        train(data, run_path, TrainConfig(epochs=epochs, seed=0), progress=False, log=lambda *_: None)
    run = Run.load(run_path)
    rel = run.relations[0]
    base = embed_catalog(run, [rel], progress=False)[rel].astype(np.float32)
    m, dim = base.shape
    r = run.check_relation(rel)
    model = run.model
    users = torch.arange(-1, model.n_users)
    with torch.no_grad():
        theta = model.theta(torch.full_like(users, r), users).double().numpy()
    w_users = (theta ** 2).astype(np.float32)
    d2 = ((base[:, None, :] - base[None, :, :]) ** 2).sum(-1) if m <= 4000 else None
    if d2 is None:
        raise ValueError("trained catalog too large for the nearest-neighbour scale estimate")
    np.fill_diagonal(d2, np.inf)
    s = noise * float(np.median(np.sqrt(d2.min(1)))) / np.sqrt(dim)
    src = rng.permutation(np.resize(np.arange(m), n))
    p = base[src] + rng.normal(0.0, s, (n, dim)).astype(np.float32)
    note = f"{m} items of {run_path} (relation {rel}, K = {dim}), ×{n / m:.0f} with noise s = {s:.3g}; {w_users.shape[0]} users"
    return p, w_users, note


def user_weights(dim: int, rng: np.random.Generator, users: int) -> np.ndarray:
    """w = θ² for the global user (θ = 1) and ``users − 1`` personal users with θ_k = exp(N(0, 0.5²))."""
    theta = np.ones((users, dim), np.float32)
    theta[1:] = np.exp(rng.normal(0.0, 0.5, (users - 1, dim))).astype(np.float32)
    return theta ** 2


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k].tolist()) & set(t.tolist())) / k for f, t in zip(found, truth)]))


def run_dataset(name: str, p: np.ndarray, w_users: np.ndarray, args: argparse.Namespace, bw: float, rng: np.random.Generator) -> dict:
    n = p.shape[0]
    res: dict = {"name": name}
    qi = rng.choice(n, size=args.queries, replace=False)
    wq = w_users[np.arange(args.queries) % w_users.shape[0]]
    if args.build_only:  # only the IVF lists, saved to --state-dir for a later timed run
        res.update(exact_build_s=0.0, exact_rss_mb=0.0, exact_mb=0.0, exact_single_qps=float("nan"), exact_single_bw_frac=0.0, exact_batched=[])
        truth = np.zeros((0, 10), np.int64)
    else:
        truth = run_exact(p, qi, wq, args, bw, res)
    res.update(run_ivf(name, p, qi, wq, truth, w_users.shape[0], args, res["exact_single_qps"]))
    if args.hnsw_ef and not args.build_only:
        res.update(run_hnsw(p, qi, wq, truth, w_users.shape[0], args, res["exact_single_qps"]))
    return res


def run_exact(p: np.ndarray, qi: np.ndarray, wq: np.ndarray, args: argparse.Namespace, bw: float, res: dict) -> np.ndarray:
    """Exact backend: single and batched query rates (into ``res``); returns the true top-10 of the queries."""
    k = 10
    gc.collect()
    r0 = rss_mb()
    t0 = time.perf_counter()
    exact = ExactIndex(p)
    res["exact_build_s"] = time.perf_counter() - t0
    res["exact_rss_mb"] = rss_mb() - r0
    res["exact_mb"] = exact.nbytes() / 1e6
    index_bytes = exact.vt.nbytes
    # single query (memory-bound matrix-vector product + selection)
    single = [best_time(lambda i=i: exact.search(p[qi[i]], wq[i], k, exclude=qi[i:i + 1]), 1) for i in range(args.exact_single)]
    t_single = float(np.median(single))
    res["exact_single_qps"] = 1.0 / t_single
    res["exact_single_bw_frac"] = index_bytes / t_single / 1e9 / bw
    # batched: one pass over vᵀ per batch of B queries, each row with its own user's weights
    res["exact_batched"] = []
    for b in args.batches:
        sel = slice(0, b)
        t = best_time(lambda: exact.search(p[qi[sel]], wq[sel], k, exclude=qi[sel]), 1)
        res["exact_batched"].append({"B": b, "qps": b / t, "effective_bw_frac": b * index_bytes / t / 1e9 / bw,
                                     "pass_bw_frac": index_bytes / t / 1e9 / bw, "gflops": 2 * b * index_bytes / 4 / t / 1e9})
    # ground truth for recall, batched
    t0 = time.perf_counter()
    truth = np.concatenate([exact.search(p[qi[s:s + 256]], wq[s:s + 256], k, exclude=qi[s:s + 256]).ids for s in range(0, args.queries, 256)])
    res["exact_truth_qps"] = args.queries / (time.perf_counter() - t0)
    del exact
    gc.collect()
    return truth


def run_ivf(name: str, p: np.ndarray, qi: np.ndarray, wq: np.ndarray, truth: np.ndarray, n_users: int, args: argparse.Namespace,
            exact_qps: float) -> dict:
    """IVF: build (or load from --state-dir), then single queries per probing setting."""
    n, dim, k = p.shape[0], p.shape[1], 10
    res: dict = {}
    # ---- IVF ----------------------------------------------------------------------------------
    r0 = rss_mb()
    t0 = time.perf_counter()
    state_file = Path(args.state_dir) / f"ivf-{name}-{n}-{dim}-{args.components}-{args.seed}.npz" if args.state_dir else None
    # the vectors' fingerprint goes with the lists: a dataset's vectors depend on the --datasets before it (one rng)
    digest = np.uint32(zlib.crc32(np.ascontiguousarray(p[::max(1, n // 4096)]).tobytes()))
    if state_file is not None and state_file.is_file():  # lists built by an earlier (untimed) run on the same vectors
        state = dict(np.load(state_file))
        if "vectors_crc32" in state and state.pop("vectors_crc32") != digest:
            raise SystemExit(f"{state_file} holds lists of other vectors (a different --datasets order?): remove it")
        ivf = IVFIndex(p, state=state)
        res["ivf_build"] = f"loaded {state_file.name}"
    else:
        ivf = IVFIndex(p, nlist=args.nlist or default_nlist(n), seed=0, split_gain=args.split_gain, split_width=args.split_width,
                       tune_target=args.tune_target)
        res["ivf_build"] = "built"
        if state_file is not None:
            state_file.parent.mkdir(parents=True, exist_ok=True)
            np.savez(state_file, **ivf.state(), vectors_crc32=digest)
    res["ivf_build_s"] = time.perf_counter() - t0
    res["ivf_rss_mb"] = rss_mb() - r0
    res["ivf_mb"] = ivf.nbytes() / 1e6
    res["nlist"] = ivf.nlist
    res["tuned_nprobe"], res["tuned"] = ivf.nprobe, ivf.tuned
    print(f"[{name}] IVF {res['ivf_build']} in {res['ivf_build_s']:.0f} s: {ivf.nlist} lists, probe count {ivf.nprobe} "
          f"(validation recall per count: {', '.join(f'{a}: {b:.4f}' for a, b in ivf.tuned) or 'stored'})", flush=True)
    res["ivf"] = []
    for probe in [] if args.build_only else args.probes:
        parts = (probe.replace("auto", str(res["tuned_nprobe"])).split(":") + ["0", "0"])[:3]
        nprobe, reach, ratio = int(parts[0]), float(parts[1]), float(parts[2])
        ivf.nprobe, ivf.reach, ivf.probe_ratio = nprobe, reach, ratio
        found = np.empty((args.queries, k), np.int64)
        passes = []
        for _ in range(max(1, args.ivf_passes)):  # median pass: a burst of load from elsewhere hits one pass, not the rate
            t0 = time.perf_counter()
            for i in range(args.queries):  # single queries, one call each (latency-bound path)
                found[i] = ivf.search(p[qi[i]], wq[i], k, exclude=qi[i:i + 1]).ids[0]
            passes.append(time.perf_counter() - t0)
        t = float(np.median(passes))
        per_user = [recall_at(found[u::n_users], truth[u::n_users]) for u in range(n_users)]
        ivf.search(p[qi], wq, k, exclude=qi)  # once more as one batch, only to count the lists each query probes
        res["ivf"].append({"nprobe": nprobe, "reach": reach, "ratio": ratio, "qps": args.queries / t, "speedup": args.queries / t / exact_qps,
                           "recall": recall_at(found, truth), "recall_min_user": min(per_user),
                           "lists": float(ivf.last_probed.mean()), "lists_p99": float(np.percentile(ivf.last_probed, 99))})
    del ivf
    gc.collect()
    return res


def run_hnsw(p: np.ndarray, qi: np.ndarray, wq: np.ndarray, truth: np.ndarray, n_users: int, args: argparse.Namespace,
             exact_qps: float) -> dict:
    """HNSW (graph of the unweighted p, walked under the user's weights): build, then single queries per efSearch."""
    k = truth.shape[1]
    r0 = rss_mb()
    t0 = time.perf_counter()
    hnsw = HNSWIndex(p, m=args.hnsw_m, ef_construction=args.hnsw_efc)
    out: dict = {"hnsw_build_s": time.perf_counter() - t0, "hnsw_rss_mb": rss_mb() - r0, "hnsw_mb": hnsw.nbytes() / 1e6, "hnsw": []}
    for ef in args.hnsw_ef:
        hnsw.ef_search = ef
        found = np.empty((args.queries, k), np.int64)
        passes = []
        for _ in range(max(1, args.ivf_passes)):
            t0 = time.perf_counter()
            for i in range(args.queries):
                found[i] = hnsw.search(p[qi[i]], wq[i], k, exclude=qi[i:i + 1]).ids[0]
            passes.append(time.perf_counter() - t0)
        t = float(np.median(passes))
        per_user = [recall_at(found[u::n_users], truth[u::n_users]) for u in range(n_users)]
        out["hnsw"].append({"ef": ef, "qps": args.queries / t, "speedup": args.queries / t / exact_qps,
                            "recall": recall_at(found, truth), "recall_min_user": min(per_user)})
    print(f"  hnsw M={args.hnsw_m} efC={args.hnsw_efc}: build {out['hnsw_build_s']:.1f} s; "
          + "; ".join(f"ef {v['ef']} recall {v['recall']:.4f} (worst {v['recall_min_user']:.4f}) {v['qps']:.0f} q/s = {v['speedup']:.0f}x"
                      for v in out["hnsw"]), flush=True)
    del hnsw
    gc.collect()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="items (default 1,000,000)")
    ap.add_argument("--dim", type=int, default=100, help="K (default 100)")
    ap.add_argument("--quick", action="store_true", help="100,000 items")
    ap.add_argument("--queries", type=int, default=500, help="query items for recall and IVF timing")
    ap.add_argument("--exact-single", type=int, default=5, help="single exact queries timed")
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--ivf-passes", type=int, default=3, help="timed passes over the queries per IVF setting (median pass)")
    ap.add_argument("--probes", nargs="+", default=["auto:0:1", "16", "8:0:1", "4:0:1", "8:1:1"],
                    help="IVF settings NPROBE[:REACH[:RATIO]] (missing parts 0 = off): NPROBE alone is a fixed number of lists; "
                         "RATIO adds lists within (1 + RATIO) × the nearest's distance, REACH a second round; NPROBE auto = the count the index "
                         "measured on validation queries (the library default: auto:0:1)")
    ap.add_argument("--nlist", type=int, default=None)
    ap.add_argument("--split-gain", type=float, default=DEFAULT_SPLIT_GAIN, help="IVF: split lists 2-means improves by this share (0 with --split-width 0: no splitting, the pre-issue-27 lists)")
    ap.add_argument("--split-width", type=float, default=DEFAULT_SPLIT_WIDTH, help="IVF: split lists wider than this × the median list")
    ap.add_argument("--hnsw-ef", type=int, nargs="*", default=[], help="also build the HNSW backend and time these efSearch values")
    ap.add_argument("--hnsw-m", type=int, default=16, help="HNSW graph degree M")
    ap.add_argument("--hnsw-efc", type=int, default=40, help="HNSW efConstruction")
    ap.add_argument("--components", type=int, default=1000, help="components of the two mixtures (the issue-27 hard case: 2000)")
    ap.add_argument("--users", type=int, default=4, help="users with different θ (the first is the global θ = 1)")
    ap.add_argument("--datasets", nargs="+", default=["lowdim", "mixture", "trained"], choices=["lowdim", "mixture", "trained", "uniform"],
                    help="lowdim: Gaussian mixture with 8-dimensional components; mixture: isotropic 100-dimensional components; "
                         "trained: a trained model's item vectors replicated with noise; uniform: no structure")
    ap.add_argument("--trained-run", default=None, help="run directory for the trained dataset (default: train one, ~1-3 min)")
    ap.add_argument("--trained-epochs", type=int, default=4, help="epochs when the trained dataset trains its own run")
    ap.add_argument("--trained-noise", type=float, default=0.5, help="replica noise, in units of the items' nearest-neighbour distance")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--state-dir", default=None, help="save each dataset's IVF lists here, and load them when present (same data: same file)")
    ap.add_argument("--build-only", action="store_true", help="build (and save, with --state-dir) the IVF lists; time nothing")
    ap.add_argument("--tune-target", type=float, default=DEFAULT_TUNE_TARGET, help="IVF: validation recall@10 the probe count must reach (0: fixed --probes only)")
    args = ap.parse_args()
    if args.quick:
        args.n = 100_000
    rng = np.random.default_rng(args.seed)
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    bwd = memory_bandwidth()
    bw = bwd["read"]
    w_users = user_weights(args.dim, rng, args.users)
    results = []
    notes = []
    for name in args.datasets:
        w = w_users
        if name == "trained":
            with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
                p, w, note = trained_vectors(args.n, rng, args.trained_run, args.trained_epochs, args.trained_noise, Path(tmp))
            notes.append(f"trained: {note}")
        else:
            p = {"mixture": gaussian_mixture, "lowdim": lowdim_mixture, "uniform": uniform}[name](args.n, args.dim, rng, *(() if name == "uniform" else (args.components,)))
        results.append(run_dataset(name, p, w, args, bw, rng))
        results[-1]["dim"] = p.shape[1]
        r = results[-1]  # as each dataset finishes (a long run may be stopped before the tables)
        print(f"[{name}] exact single {r['exact_single_qps']:.1f} q/s, build exact {r['exact_build_s']:.1f} s / IVF {r['ivf_build_s']:.1f} s; "
              + "; ".join(f"{v['nprobe']}:{v['reach']:g}:{v['ratio']:g} recall {v['recall']:.4f} (worst {v['recall_min_user']:.4f}) "
                          f"lists {v['lists']:.1f} {v['qps']:.0f} q/s = {v['speedup']:.0f}x" for v in r["ivf"]), flush=True)
        del p
        gc.collect()
    total = time.perf_counter() - t_start

    print(f"# bench_index: N = {args.n:,}, K = {args.dim}, {args.users} users, {args.queries} query items, k = 10\n")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; "
          f"read bandwidth {bw:.1f} GB/s ({', '.join(f'{k} {v:.1f}' for k, v in bwd.items() if k != 'read')}); total {total:.0f} s\n")
    print("## (a) exact search vs memory bandwidth\n")
    print("| data | queries per call | queries/s | effective bytes/s ÷ bandwidth | streamed bytes/s ÷ bandwidth | GFLOP/s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | 1 | {r['exact_single_qps']:.1f} | {r['exact_single_bw_frac']:.0%} | {r['exact_single_bw_frac']:.0%} | {2 * args.n * 2 * r['dim'] * r['exact_single_qps'] / 1e9:.1f} |")
        for b in r["exact_batched"]:
            print(f"| {r['name']} | {b['B']} | {b['qps']:.1f} | {b['effective_bw_frac']:.0%} | {b['pass_bw_frac']:.0%} | {b['gflops']:.1f} |")
    print("\n## (b) IVF single-query search vs exact\n")
    for note in notes:
        print(note + "\n")
    print("| data | lists | nprobe | ratio | reach | lists probed (mean / p99) | recall@10 | worst user's recall@10 | queries/s | × exact single-query |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for v in r["ivf"]:
            print(f"| {r['name']} | {r['nlist']} | {v['nprobe']} | {v['ratio']:g} | {v['reach']:g} | {v['lists']:.1f} / {v['lists_p99']:.0f} | {v['recall']:.4f} | "
                  f"{v['recall_min_user']:.4f} | {v['qps']:.0f} | {v['speedup']:.0f}× |")
    print("\n## build\n")
    print("| data | exact build s | exact RSS MB | exact index MB | IVF build s | IVF RSS MB | IVF index MB |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['exact_build_s']:.1f} | {r['exact_rss_mb']:.0f} | {r['exact_mb']:.0f} | {r['ivf_build_s']:.1f} | "
              f"{r['ivf_rss_mb']:.0f} | {r['ivf_mb']:.0f} |")
    print("\n(RSS: growth of the process's resident set during the build, blurred by memory freed earlier; "
          "index MB: the arrays the index holds beyond p, VectorIndex.nbytes)")
    print(f"\npeak RSS of the whole run: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
          f"(item vectors alone: {args.n * args.dim * 4 / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
