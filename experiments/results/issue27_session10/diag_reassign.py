import sys, time, numpy as np, faiss
sys.path.insert(0, "/work/wt/s10-27/benchmarks")
from bench_index import gaussian_mixture, lowdim_mixture, user_weights, recall_at
from lrprec.recommend.index import IVFIndex
data, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
w_users = user_weights(100, rng, 4)
p = {"lowdim": lowdim_mixture, "mixture": gaussian_mixture}[data](n, 100, rng, 2000)
qi = rng.choice(n, 1200, replace=False); wq = w_users[np.arange(qi.size) % 4]
truth = np.load(f"/tmp/s10/i27/cache_{data}_{n}_2000.npz")["truth"]
st = dict(np.load(f"/tmp/s10/i27/ivf_{data}_{n}_2000_None_0.3_4.0.npz"))
t0 = time.time()
fl = faiss.IndexFlatL2(100); fl.add(st["centroids"])
_, I = fl.search(p, 1)
print(f"exact assignment {time.time()-t0:.0f}s; changed {np.mean(I[:,0] != st['assign']):.3f}", flush=True)
cnt = np.bincount(I[:, 0], minlength=st["centroids"].shape[0])
keep = np.flatnonzero(cnt > 0); remap = np.full(cnt.size, -1); remap[keep] = np.arange(keep.size)
st2 = {"centroids": st["centroids"][keep], "assign": remap[I[:, 0]], "list_offsets": np.array([0, keep.size])}
print("lists", cnt.size, "non-empty", keep.size)
for name, s in [("stored", st), ("exact-assign", st2)]:
    ivf = IVFIndex(p, state=s)
    for npb in [8, 12, 16, 24]:
        ivf.nprobe = npb
        found = np.concatenate([ivf.search(p[qi[s:s+256]], wq[s:s+256], 10, exclude=qi[s:s+256]).ids for s in range(0, qi.size, 256)])
        pu = [recall_at(found[u::4], truth[u::4]) for u in range(4)]
        print(f"{name} {npb}:0:1 recall {recall_at(found, truth):.4f} worst {min(pu):.4f}", flush=True)
