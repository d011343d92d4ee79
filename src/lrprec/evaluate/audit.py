"""Audit (issue 26): find a Clever Hans from a run's LRP heatmaps and judge it by behaviour.

1. **SpRAy** (Lapuschkin et al., Nat. Commun. 2019): LRP heatmaps (the pair's logit, both images,
   the default composite) of evenly spaced validation pairs are summed over channels, made
   absolute (a mark that *suppresses* evidence is as much a strategy as one that adds it),
   average-pooled to ``side``×``side`` and L1-normalized; a symmetric k-nearest-neighbour
   graph over them is the affinity, the eigengap of its normalized Laplacian picks the number
   of clusters and scikit-learn's :class:`~sklearn.cluster.SpectralClustering` (precomputed
   affinity) assigns them; where the eigengap says one cluster, the heatmaps are split in two
   anyway (:data:`MIN_CLUSTERS`: the behaviour tests need a contrast, and a global cast leaves
   every heatmap alike), and that split counts as suspicious only if it is from both sides
   (:func:`_score_as_one_contrast`). scikit-learn rather than ``corelay`` (the SpRAy authors' package):
   it is already a dependency, its spectral tools are the same algorithm (kNN affinity →
   spectral embedding → k-means), and corelay pins an HDF5 pipeline we do not need.
2. **Suspicion from behaviour on held-out pairs**, not from the heatmap: the brand mark,
   pattern and colour are legitimate evidence on this catalog. Each cluster is removed from
   every item of the validation pairs in two ways — its *focus region* (the pixels holding
   80% of the cluster's distinctive relevance: its mean |R| minus the other heatmaps', clipped
   at 0) in-filled by ROAD's linear imputer, and its
   *concept direction* in the features the head reads (the pattern CAV cov(f, t)/var(t) of
   cluster membership t, :func:`lrprec.explain.concepts.signal_cav`, projected out towards the
   non-members' mean, P-ClArC style: :func:`~lrprec.explain.concepts.project_out`) — and
   for each removal the *effect* (mean |ΔP| over validation pairs) is set against the
   *cost* (validation accuracy lost). A legitimate feature costs accuracy when removed; an
   artifact moves the outputs and costs nothing (or gains). ``score`` = max over the two
   removals of effect − :data:`COST_WEIGHT` · cost; ``suspicious`` = score > :data:`THRESHOLD`
   (both chosen on validation pairs of catalogs with and without an artifact; docs/guide/
   audit-and-correct.md). The latent removal needs no localized region, so a global tint
   can be caught too.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from lrprec.errors import UsageError
from lrprec.explain.concepts import project_out, signal_cav

# Chosen on validation pairs (docs/guide/audit-and-correct.md): effect − COST_WEIGHT · cost > THRESHOLD.
COST_WEIGHT = 2.0
THRESHOLD = 0.02
TIE = 0.005  # scores closer than this are tied: below the sampling error of a mean |ΔP| over ~1,600 validation pairs
# the behaviour tests need a contrast (one cluster has no concept direction and no distinctive region), so a spectrum
# whose eigengap says "one strategy" is split in two: a global cast leaves every heatmap alike (docs/guide/audit-and-correct.md)
MIN_CLUSTERS = 2
FOCUS_MASS = 0.8  # the focus region: the smallest pixel set holding this share of the cluster's distinctive |R| ...
FOCUS_MAX_AREA = 0.25  # ... but at most this share of the image


# ---- SpRAy ----------------------------------------------------------------------------------
def heatmap_features(relevance: torch.Tensor | np.ndarray, side: int = 16) -> np.ndarray:
    """(n, side²) L1-normalized, average-pooled absolute heatmaps of (n, C, H, W) or (n, H, W) relevance."""
    r = torch.as_tensor(relevance, dtype=torch.float64)
    if r.dim() == 4:
        r = r.sum(1)
    r = torch.nn.functional.adaptive_avg_pool2d(r.abs().unsqueeze(1), side).flatten(1)
    return (r / r.sum(1, keepdim=True).clamp_min(1e-300)).numpy()


def knn_affinity(x: np.ndarray, n_neighbors: int = 10):
    """Symmetric 0/1 k-nearest-neighbour graph (scipy sparse), the SpRAy affinity."""
    from sklearn.neighbors import kneighbors_graph

    k = max(1, min(n_neighbors, len(x) - 1))
    a = kneighbors_graph(x, k, mode="connectivity", include_self=False)
    return ((a + a.T) > 0).astype(np.float64)


def eigengap(affinity, max_clusters: int = 8) -> tuple[int, np.ndarray]:
    """(number of clusters, the smallest eigenvalues of the normalized Laplacian): the count k ≤
    ``max_clusters`` after which the spectrum jumps most (λ_k − λ_{k−1}, 0-indexed)."""
    from scipy.linalg import eigh
    from scipy.sparse.csgraph import laplacian

    lap = laplacian(affinity, normed=True)
    lap = lap.toarray() if hasattr(lap, "toarray") else np.asarray(lap)
    m = min(max_clusters + 1, lap.shape[0])
    vals = eigh(lap, eigvals_only=True, subset_by_index=[0, m - 1])
    gaps = np.diff(vals)  # gaps[k-1] = λ_k − λ_{k−1}: the jump after k clusters
    return int(np.argmax(gaps[:max_clusters]) + 1), vals


def spray(heatmaps: np.ndarray, n_neighbors: int = 10, max_clusters: int = 8, n_clusters: int | None = None,
          seed: int = 0, min_clusters: int = 1) -> dict:
    """Cluster (n, d) heatmap features: labels, the count (eigengap, at least ``min_clusters``, unless ``n_clusters``),
    eigenvalues, embedding."""
    from sklearn.cluster import SpectralClustering
    from sklearn.manifold import spectral_embedding

    if len(heatmaps) < 4:
        raise UsageError(f"SpRAy needs at least 4 heatmaps, got {len(heatmaps)}")
    aff = knn_affinity(heatmaps, n_neighbors)
    found, vals = eigengap(aff, max_clusters)
    k = n_clusters or max(found, min(min_clusters, max_clusters))
    with warnings.catch_warnings():  # well-separated strategies leave the kNN graph disconnected: expected
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        emb = spectral_embedding(aff, n_components=max(k, 2), random_state=seed, drop_first=False)
    if k == 1:
        labels = np.zeros(len(heatmaps), np.int64)
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Graph is not fully connected")
            labels = SpectralClustering(k, affinity="precomputed", random_state=seed, assign_labels="cluster_qr").fit_predict(aff.toarray())
    return {"labels": labels.astype(np.int64), "n_clusters": int(k), "eigenvalues": vals, "embedding": emb,
            "forced_split": bool(n_clusters is None and k > found)}


def prototypes(embedding: np.ndarray, members: np.ndarray, n: int = 6) -> np.ndarray:
    """Indices (into the samples) of the ``n`` members nearest their centroid in the spectral embedding."""
    e = embedding[members]
    d = ((e - e.mean(0)) ** 2).sum(1)
    return members[np.argsort(d, kind="stable")[:n]]


def distinctive_map(maps: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """What sets a cluster apart: its mean normalized |relevance| minus the other heatmaps' mean, clipped at 0
    (the whole cluster's mean when it holds every heatmap). A strategy is where the cluster looks *and the others
    do not*: the product, which every heatmap covers, cancels, a mark only some look at stays."""
    mean_in = maps[inside].mean(0)
    if inside.all():
        return mean_in
    return np.clip(mean_in - maps[~inside].mean(0), 0, None)


def focus_region(region: np.ndarray, mass: float = FOCUS_MASS, max_area: float = FOCUS_MAX_AREA) -> np.ndarray:
    """Bool (H, W): the fewest pixels holding ``mass`` of a mean |relevance| map, at most ``max_area`` of it."""
    flat = np.abs(region).ravel()
    order = np.argsort(-flat, kind="stable")
    cum = np.cumsum(flat[order]) / max(flat.sum(), 1e-300)
    n = min(int(np.searchsorted(cum, mass) + 1), max(1, int(max_area * flat.size)))
    out = np.zeros(flat.size, bool)
    out[order[:n]] = True
    return out.reshape(region.shape)


# ---- behaviour ------------------------------------------------------------------------------
def cluster_figure(region: np.ndarray, images: list[np.ndarray], heatmaps: list[np.ndarray], path: Path, scale: int = 2) -> Path:
    """A PNG strip: the cluster's mean |relevance| (red), then each prototype's image and its heatmap (bwr)."""
    from PIL import Image

    from lrprec.explain.render import bwr, overlay

    h, w = region.shape
    tiles = [bwr(region / max(float(np.abs(region).max()), 1e-12))]
    for img, r in zip(images, heatmaps):
        tiles += [np.asarray(img, np.uint8), overlay(img, r, float(np.abs(r).max()) or 1.0)]
    gap = np.full((h, 2, 3), 255, np.uint8)
    strip = np.concatenate([x for t in tiles for x in (t, gap)][:-1], axis=1)
    Image.fromarray(strip).resize((strip.shape[1] * scale, h * scale), Image.NEAREST).save(path)
    return path


def effect_and_cost(p0: np.ndarray, p1: np.ndarray, label: np.ndarray) -> dict:
    """effect = mean |ΔP|; cost = accuracy (P > 0.5) before − after; the raw accuracies too."""
    acc0, acc1 = float(((p0 > 0.5) == (label == 1)).mean()), float(((p1 > 0.5) == (label == 1)).mean())
    return {"effect": float(np.abs(p1 - p0).mean()), "cost": acc0 - acc1, "accuracy": acc0, "accuracy_removed": acc1}


def suspicion(tests: dict) -> float:
    """The cluster's score: the larger over its removals of effect − COST_WEIGHT · cost."""
    return max(t["effect"] - COST_WEIGHT * t["cost"] for t in tests.values())


def _top(flagged: list[dict]) -> int | None:
    """The flagged cluster with the highest score; scores within :data:`TIE` of it count as tied (a two-way split has
    one concept direction, so a cluster and its complement get the same latent test up to noise), and a tie goes to
    the cluster whose own region moves the outputs more — the test that tells a cluster from its complement."""
    if not flagged:
        return None
    top = max(c["score"] for c in flagged)
    tied = (c for c in flagged if c["score"] >= top - TIE)
    return max(tied, key=lambda c: (suspicion({"region": c["tests"]["region"]}), c["score"]))["id"]


def _score_as_one_contrast(clusters: list[dict]) -> None:
    """A split the eigengap did not ask for (:data:`MIN_CLUSTERS`) is one contrast seen from its two sides: it is
    suspicious only if removing it moves the outputs for free from both (each cluster's score becomes the lower one).
    On clean catalogs one side of such a split can score above the threshold by chance; an artifact scores on both."""
    both = min(c["score"] for c in clusters)
    for c in clusters:
        c["score_alone"], c["score"], c["suspicious"] = c["score"], both, bool(both > THRESHOLD)


# ---- the audit of a run -----------------------------------------------------------------------
def _item_features(model, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model.embed(inputs[s:s + batch_size]) for s in range(0, len(inputs), batch_size)])


def _pair_probabilities(model, feats: torch.Tensor, index: np.ndarray, pairs) -> np.ndarray:
    """P(related) of ``pairs`` from item features ``feats`` whose row k is catalog item ``index[k]``."""
    pos = np.full(int(index.max()) + 1, -1, np.int64)
    pos[index] = np.arange(index.size)
    with torch.inference_mode():
        rel, usr = torch.from_numpy(pairs.relation), torch.from_numpy(pairs.user)
        fa, fb = feats[torch.from_numpy(pos[pairs.a])], feats[torch.from_numpy(pos[pairs.b])]
        logit = model.logit_from_embeddings(model.project(fa, rel), model.project_partner(fb, rel), rel, usr)
    return torch.sigmoid(logit.double()).numpy()


def _load_run(run_path, split: str):
    from lrprec.run import Run

    if split not in ("validation", "test"):
        raise UsageError(f"--split must be validation or test, got {split!r}")
    run = Run.load(run_path)
    if run.model.backbone.kind == "features":
        raise UsageError("the audit explains images; this run reads precomputed features (train with --mode images)")
    if run.catalog.images is None:
        raise UsageError(f"{run.catalog.root} has no images to explain")
    from lrprec.data.catalog import CatalogError

    try:
        n = len(run.catalog.pairs(split))
    except CatalogError as exc:
        raise UsageError(f"the run's catalog has no {split} pairs to audit on: {exc}") from None
    if n < 4:
        raise UsageError(f"the run's catalog has {n} {split} pairs; the audit needs at least 4")
    return run


def audit_run(run_path: str | os.PathLike, split: str = "validation", pairs: int = 256, composite: str | None = None,
              n_neighbors: int = 10, max_clusters: int = 8, n_clusters: int | None = None, out: str | os.PathLike | None = None,
              batch_size: int = 64, log=None) -> dict:
    """Audit a run: SpRAy clusters of its heatmaps, each scored by behaviour on the split's pairs.

    Writes ``RUN/audit/audit.json`` (or ``out``) with, per cluster, ``cluster_<id>_region.npy`` (the
    cluster's distinctive relevance, :func:`distinctive_map`, H×W) and ``cluster_<id>.png`` (that map, then its
    prototypes' images and heatmaps) next to it; returns the report."""
    from lrprec.defaults import DEFAULT_COMPOSITE
    from lrprec.explain.targets import explain_catalog_pairs
    from lrprec.run import atomic_write_text, item_inputs

    if pairs is None or pairs < 4:
        raise UsageError(f"--pairs must be at least 4, got {pairs}")
    t0 = time.perf_counter()
    run = _load_run(run_path, split)
    model, cat = run.model.eval(), run.catalog
    composite = composite or DEFAULT_COMPOSITE
    sel = cat.pairs(split).spread(pairs)
    relevance = explain_catalog_pairs(model, cat, sel, run.input_size, "logit", composite, batch_size)
    rows = np.concatenate([sel.a, sel.b])
    cl = spray(heatmap_features(relevance), n_neighbors, max_clusters, n_clusters, min_clusters=MIN_CLUSTERS)
    full = torch.nn.functional.normalize(relevance.detach().sum(1).abs().to(torch.float64).flatten(1), p=1, dim=1)
    full = full.view(len(rows), *relevance.shape[-2:]).numpy()
    pixel = relevance.detach().sum(1).to(torch.float64).numpy()  # signed, for the prototypes' heatmaps

    # behaviour: every item of the split's pairs, as is and with each cluster removed
    held = cat.pairs(split)
    index = np.unique(np.concatenate([held.a, held.b, rows]))
    x = item_inputs(cat, model, index, run.input_size)
    feats = _item_features(model, x)
    p0 = _pair_probabilities(model, feats, index, held)
    pos = np.searchsorted(index, rows)

    out_path = Path(out) if out else run.path / "audit" / "audit.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    clusters = []
    for c in range(cl["n_clusters"]):
        members = np.flatnonzero(cl["labels"] == c)
        region = distinctive_map(full, cl["labels"] == c)
        np.save(out_path.parent / f"cluster_{c}_region.npy", region.astype(np.float32))
        focus = torch.from_numpy(np.broadcast_to(focus_region(region), (len(x), 1, *region.shape)).copy())
        from lrprec.evaluate.imputers import linear_imputation

        x_in = linear_imputation(x, focus).to(x.dtype)
        tests = {"region": effect_and_cost(p0, _pair_probabilities(model, _item_features(model, x_in), index, held), held.label)}
        t = torch.zeros(len(rows), dtype=feats.dtype)
        t[members] = 1
        f_exp = feats[torch.from_numpy(pos)]
        if 0 < len(members) < len(rows):
            v = signal_cav(f_exp, t)
            moved = project_out(feats, v, f_exp[t == 0].mean(0))
            tests["latent"] = effect_and_cost(p0, _pair_probabilities(model, moved, index, held), held.label)
        score = suspicion(tests)
        protos = prototypes(cl["embedding"], members)
        cluster_figure(region, [np.asarray(cat.images[rows[i]]) for i in protos], [pixel[i] for i in protos],
                       out_path.parent / f"cluster_{c}.png")
        clusters.append({
            "id": c, "size": int(np.unique(rows[members]).size), "n_heatmaps": int(members.size),
            "score": round(float(score), 6), "suspicious": bool(score > THRESHOLD),
            "region": f"cluster_{c}_region.npy", "members": sorted(int(i) for i in np.unique(rows[members])),
            "prototypes": [int(rows[i]) for i in protos], "figure": f"cluster_{c}.png",
            "focus_area": float(focus_region(region).mean()), "tests": tests,
        })
        if log:
            log(f"cluster {c}: {members.size} heatmaps, score {score:+.3f}")
    if cl["forced_split"]:
        _score_as_one_contrast(clusters)
    flagged = [c for c in clusters if c["suspicious"]]
    report = {
        "run": str(run.path), "weights_id": run.version, "split": split, "layer": None,
        "composite": composite, "pairs": int(len(sel)), "heatmaps": int(len(rows)), "n_clusters": cl["n_clusters"],
        "eigenvalues": [float(v) for v in cl["eigenvalues"]], "rule": {"cost_weight": COST_WEIGHT, "threshold": THRESHOLD},
        "forced_split": cl["forced_split"], "clusters": clusters,
        "flagged": _top(flagged),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_text(out_path, json.dumps(report, indent=2))
    return report


def audit_text(r: dict) -> str:
    """The audit as a few terminal lines."""
    how = "the eigengap's one cluster split in two" if r.get("forced_split") else "clusters by the eigengap"
    lines = [f"audit of {r['run']} ({r['heatmaps']} heatmaps of {r['pairs']} {r['split']} pairs; {r['n_clusters']} {how})"]
    for c in r["clusters"]:
        tests = ", ".join(f"{k}: effect {v['effect']:.3f}, cost {100 * v['cost']:+.1f} pts" for k, v in c["tests"].items())
        lines.append(f"  cluster {c['id']}: {c['size']} items, score {c['score']:+.3f}{'  SUSPICIOUS' if c['suspicious'] else ''}  ({tests})")
    lines.append(f"flagged: cluster {r['flagged']}" if r["flagged"] is not None else "flagged: none (no cluster moves outputs without helping accuracy)")
    return "\n".join(lines)
