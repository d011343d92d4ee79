import sys, time, argparse
from pathlib import Path
import numpy as np
sys.path.insert(0, "/work/wt/s10-27/benchmarks")
from bench_index import gaussian_mixture, lowdim_mixture, user_weights, recall_at
from lrprec.recommend.index import ExactIndex, IVFIndex, default_nlist

ap = argparse.ArgumentParser()
ap.add_argument("--data", default="lowdim"); ap.add_argument("--n", type=int, default=200000)
ap.add_argument("--components", type=int, default=2000); ap.add_argument("--queries", type=int, default=300)
ap.add_argument("--nlist", type=int, default=None); ap.add_argument("--split-gain", type=float, default=0.3); ap.add_argument("--split-width", type=float, default=4.0)
ap.add_argument("--tag", default=""); ap.add_argument("--probes", nargs="+", default=["8:0:1", "16:0:1"])
ap.add_argument("--analyze", action="store_true"); ap.add_argument("--hnsw", type=int, nargs="*", default=[]); ap.add_argument("--hnsw-m", type=int, default=16); ap.add_argument("--hnsw-efc", type=int, default=40); ap.add_argument("--skip-ivf", action="store_true"); ap.add_argument("--time", type=int, default=0)
a = ap.parse_args()
rng = np.random.default_rng(0)
w_users = user_weights(100, rng, 4)
p = {"lowdim": lowdim_mixture, "mixture": gaussian_mixture}[a.data](a.n, 100, rng, a.components)
qi = rng.choice(a.n, a.queries * 4, replace=False); wq = w_users[np.arange(qi.size) % 4]
cache = Path(f"/tmp/s10/i27/cache_{a.data}_{a.n}_{a.components}.npz")
if cache.exists():
    truth = np.load(cache)["truth"]
else:
    ex = ExactIndex(p)
    truth = np.concatenate([ex.search(p[qi[s:s+256]], wq[s:s+256], 10, exclude=qi[s:s+256]).ids for s in range(0, qi.size, 256)])
    np.savez(cache, truth=truth); del ex
sf = Path(f"/tmp/s10/i27/ivf_{a.data}_{a.n}_{a.components}_{a.nlist}_{a.split_gain}_{a.split_width}{a.tag}.npz")
t0 = time.time()
if a.skip_ivf:
    a.probes = []
elif sf.exists():
    ivf = IVFIndex(p, state=dict(np.load(sf)))
else:
    ivf = IVFIndex(p, nlist=a.nlist or default_nlist(a.n), seed=0, split_gain=a.split_gain, split_width=a.split_width)
    np.savez(sf, **ivf.state())
if not a.skip_ivf: print(f"{a.data} n={a.n} lists={ivf.nlist} build/load {time.time()-t0:.0f}s", flush=True)
for pr in a.probes:
    parts = (pr.split(":") + ["0", "0"])[:3]
    ivf.nprobe, ivf.reach, ivf.probe_ratio = int(parts[0]), float(parts[1]), float(parts[2])
    found = np.concatenate([ivf.search(p[qi[s:s+256]], wq[s:s+256], 10, exclude=qi[s:s+256]).ids for s in range(0, qi.size, 256)])
    lp = []
    for s in range(0, qi.size, 256):
        ivf.search(p[qi[s:s+256]], wq[s:s+256], 10, exclude=qi[s:s+256]); lp.append(ivf.last_probed)
    lp = np.concatenate(lp)
    pu = [recall_at(found[u::4], truth[u::4]) for u in range(4)]
    msg = f"  {pr}: recall {recall_at(found, truth):.4f} worst {min(pu):.4f} lists {lp.mean():.1f} p99 {np.percentile(lp,99):.0f}"
    if a.time:
        t0 = time.perf_counter()
        for i in range(a.time):
            ivf.search(p[qi[i]], wq[i], 10, exclude=qi[i:i+1])
        msg += f" {a.time/(time.perf_counter()-t0):.0f} q/s"
    print(msg, flush=True)
if a.analyze:
    from lrprec.recommend.search import query_vectors
    q = query_vectors(p[qi], wq)
    dist = ivf._centroid_distances(p[qi], wq, q)
    ranks, ratios, dq = [], [], []
    order = np.argsort(dist, axis=1)
    rank_of = np.empty_like(order); rank_of[np.arange(qi.size)[:, None], order] = np.arange(dist.shape[1])[None, :]
    for b in range(qi.size):
        for t in truth[b]:
            l = ivf.assign[t]
            ranks.append(rank_of[b, l]); ratios.append(dist[b, l] / dist[b].min())
    ranks = np.array(ranks); ratios = np.array(ratios)
    for th in [8, 16, 24, 32, 48, 64, 128]:
        print(f"  truth in top-{th} lists: {np.mean(ranks < th):.4f}")
    for r in [1.5, 2, 3, 4]:
        print(f"  truth within ratio {r}: {np.mean(ratios <= r):.4f}")
if a.hnsw:
    from lrprec.recommend.hnsw import HNSWIndex
    import faiss
    t0 = time.time()
    hn = HNSWIndex(p, m=a.hnsw_m, ef_construction=a.hnsw_efc)
    print(f"  hnsw M={a.hnsw_m} efc={a.hnsw_efc} build {time.time()-t0:.0f}s", flush=True)
    for ef in a.hnsw:
        hn.ef_search = ef
        found = np.concatenate([hn.search(p[qi[s:s+256]], wq[s:s+256], 10, exclude=qi[s:s+256]).ids for s in range(0, qi.size, 256)])
        pu = [recall_at(found[u::4], truth[u::4]) for u in range(4)]
        t0 = time.perf_counter()
        for i in range(100):
            hn.search(p[qi[i]], wq[i], 10, exclude=qi[i:i+1])
        print(f"  hnsw ef {ef}: recall {recall_at(found, truth):.4f} worst {min(pu):.4f} {100/(time.perf_counter()-t0):.0f} q/s", flush=True)
