import sys, time, numpy as np
sys.path.insert(0, "/work/wt/s10-27/benchmarks")
from bench_index import gaussian_mixture, user_weights, recall_at
from lrprec.recommend.index import ExactIndex, IVFIndex
import lrprec.recommend.ivf as m
n, comps, ncat, nlist = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
p = gaussian_mixture(n, 100, rng, comps)
cats = rng.integers(0, ncat, n)
w = user_weights(100, rng, 4)
qi = rng.choice(n, 400, replace=False); wq = w[np.arange(400) % 4]
truth = ExactIndex(p, cats).search(p[qi], wq, 10, exclude=qi).ids
orig_median = np.median
for label in ["item-weighted median (default)", "per-list median"]:
    if label.startswith("per-list"):
        def med(a, *args, **kw):  # the width rule's np.median(np.repeat(radius, counts)) -> median over lists
            return orig_median(np.unique(a), *args, **kw) if a.ndim == 1 else orig_median(a, *args, **kw)
        m.np.median = med
    t0 = time.time()
    ix = IVFIndex(p, cats, seed=0, nlist=nlist, tune_target=0, nprobe=8)
    c = np.bincount(ix.assign)
    out = []
    for npb in [8, 32, 128]:
        ix.nprobe = npb
        out.append((npb, round(recall_at(ix.search(p[qi], wq, 10, exclude=qi).ids, truth), 4)))
    print(label, f"build {time.time()-t0:.0f}s lists {ix.nlist} median {np.median(c):.0f} p90 {np.percentile(c,90):.0f}", out, flush=True)
m.np.median = orig_median
