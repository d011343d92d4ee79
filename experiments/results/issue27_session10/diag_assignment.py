import sys, numpy as np, faiss
sys.path.insert(0, "/work/wt/s10-27/benchmarks")
from bench_index import gaussian_mixture, lowdim_mixture, user_weights
from lrprec.recommend.index import IVFIndex
from lrprec.recommend.search import query_vectors
data, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
w_users = user_weights(100, rng, 4)
p = {"lowdim": lowdim_mixture, "mixture": gaussian_mixture}[data](n, 100, rng, 2000)
qi = rng.choice(n, 1200, replace=False); wq = w_users[np.arange(qi.size) % 4]
truth = np.load(f"/tmp/s10/i27/cache_{data}_{n}_2000.npz")["truth"]
import glob
sf = sorted(glob.glob(f"/tmp/s10/i27/ivf_{data}_{n}_2000_None_0.3_4.0.npz"))[0]
ivf = IVFIndex(p, state=dict(np.load(sf)))
q = query_vectors(p[qi], wq)
dist = ivf._centroid_distances(p[qi], wq, q)
order = np.argsort(dist, axis=1)
rank_of = np.empty_like(order); rank_of[np.arange(qi.size)[:, None], order] = np.arange(dist.shape[1])[None, :]
fl = faiss.IndexFlatL2(100); fl.add(ivf.centroids)
t = truth.ravel(); b = np.repeat(np.arange(qi.size), 10)
D, I = fl.search(p[t], 4)
own = ivf.assign[t]
print("own list == nearest centroid:", np.mean(own == I[:, 0]))
r_own = rank_of[b, own]
for j in range(0, 4):
    r_j = rank_of[b, I[:, j]]
    ratio = D[:, j] / np.maximum(D[:, 0], 1e-9)
    for T in [8, 16, 24, 32]:
        base = np.mean(r_own < T)
        sp = np.mean((r_own < T) | (r_j < T))
        print(f"T={T} own {base:.4f}; + {j}-th nearest centroid {sp:.4f}", end="  ")
    print(f"| median ratio d{j}/d0 {np.median(ratio):.2f}")
# spill to all of 2nd..3rd
for T in [8, 16, 24]:
    m = (r_own < T) | (rank_of[b, I[:, 1]] < T) | (rank_of[b, I[:, 2]] < T)
    print(f"T={T} own+2nd+3rd {np.mean(m):.4f}")
# how good is the stored assignment overall (sample)
s = np.random.default_rng(1).choice(n, 20000, replace=False)
D2, I2 = fl.search(p[s], 2)
print("sample: assign == nearest centroid", np.mean(ivf.assign[s] == I2[:, 0]), "== 2nd", np.mean(ivf.assign[s] == I2[:, 1]))
dd = ((p[s] - ivf.centroids[ivf.assign[s]]) ** 2).sum(1)
print("sample: own-centroid dist / nearest dist median", np.median(dd / np.maximum(D2[:, 0], 1e-9)), "p90", np.percentile(dd / np.maximum(D2[:, 0], 1e-9), 90))
