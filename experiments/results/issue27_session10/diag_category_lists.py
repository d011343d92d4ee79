import sys, numpy as np
sys.path.insert(0, "/work/wt/s10-27/benchmarks")
from lrprec.recommend.index import IVFIndex
import lrprec.recommend.ivf as m
rng = np.random.default_rng(0)
n, dim, components = 125000, 100, 2000
centers = rng.standard_normal((components, dim)).astype(np.float32)
sizes = 1.0 / np.arange(1, components + 1) ** 0.5
comp = rng.choice(components, size=n, p=sizes / sizes.sum())
sigma = rng.uniform(0.2, 0.5, components).astype(np.float32)
x = (centers[comp] + sigma[comp, None] * rng.standard_normal((n, dim), dtype=np.float32)).astype(np.float32)
ix = IVFIndex(x, seed=0, nlist=512, tune_target=0, nprobe=8)
c = np.bincount(ix.assign)
big = np.argsort(-c)[:5]
for L in big:
    mem = np.flatnonzero(ix.assign == L)
    u, cnt = np.unique(comp[mem], return_counts=True)
    print("list", L, "size", mem.size, "components", u.size, "top counts", sorted(cnt)[-5:], "sigmas", np.round(sigma[u][:6], 2))
pure = np.mean([np.unique(comp[ix.assign == L]).size == 1 for L in range(ix.nlist)])
print("pure lists share", pure)
mixed = np.array([np.unique(comp[ix.assign == L]).size > 1 for L in range(ix.nlist)])
print("item share in mixed lists", c[mixed].sum() / n)
r = np.bincount(ix.assign, ((x - ix.centroids[ix.assign]) ** 2).sum(1)) / c
print("median radius: item-weighted", np.median(np.repeat(r, c)), "per list", np.median(r), "pure lists median", np.median(r[~mixed]), "mixed lists median", np.median(r[mixed]))
